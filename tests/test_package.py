"""`pip install .` installs transfer_core and the `transfer-lab` command with the pins of
requirements.txt: a wheel built from the project's files (no network, no build isolation) holds
every module of the package, that console script, and exactly those requirements."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def _requirements(lines) -> set[str]:
    from packaging.requirements import Requirement

    return {str(Requirement(line)) for line in lines}  # one spelling: "numpy<3,>=1.26"


def test_the_wheel_holds_the_package_the_command_and_the_pins(tmp_path):
    # requirements-dev.txt installs the backend; without it (offline), say so and skip.
    pytest.importorskip("setuptools", reason="the build backend is not installed")
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(PROJECT / "transfer_core", source / "transfer_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("transfer_lab-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode().splitlines()
    modules = {f"transfer_core/{p.name}" for p in (PROJECT / "transfer_core").glob("*.py")}
    assert modules <= names and "transfer_core/__main__.py" in names
    assert "[console_scripts]\ntransfer-lab = transfer_core.cli:main" in entry_points
    pins = [line.strip() for line in (PROJECT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    required = [line.split(": ", 1)[1] for line in metadata if line.startswith("Requires-Dist: ")]
    assert _requirements(required) == _requirements(pins)

