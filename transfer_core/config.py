"""Where Transfer Lab keeps its files, from environment variables (a CLI flag overrides).

TRANSFER_LAB_WORKSPACE  manifests, feature cache, runs (default ./workspace)
TRANSFER_LAB_DATA       the data folder the app offers first (default: none)
TRANSFER_LAB_ROOTS      folders (os.pathsep-separated) under which the app may open server
                        folders; default: the data folder and the workspace only
KERAS_HOME              Keras' own: where downloaded weights are cached
"""

from __future__ import annotations

import os
from pathlib import Path


def workspace_dir(override: str | os.PathLike | None = None) -> Path:
    """The workspace folder, created if missing."""
    path = Path(override or os.environ.get("TRANSFER_LAB_WORKSPACE") or "workspace")
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_data_dir() -> Path | None:
    value = os.environ.get("TRANSFER_LAB_DATA")
    return Path(value).expanduser().resolve() if value else None


def allowed_roots(workspace: Path | None = None) -> list[Path]:
    """Folders whose contents the app may read; a public deployment exposes nothing else."""
    value = os.environ.get("TRANSFER_LAB_ROOTS")
    roots = [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p] if value else []
    data = default_data_dir()
    if data:
        roots.append(data)
    roots.append(workspace or workspace_dir())
    return roots


def is_allowed(path: Path, roots: list[Path]) -> bool:
    path = Path(path).expanduser().resolve()
    return any(path == root or path.is_relative_to(root) for root in roots)


def manifests_dir(workspace: Path) -> Path:
    return _sub(workspace, "manifests")


def cache_dir(workspace: Path) -> Path:
    return _sub(workspace, "cache")


def runs_dir(workspace: Path) -> Path:
    return _sub(workspace, "runs")


def datasets_dir(workspace: Path) -> Path:
    """Where downloads, uploaded zips and the demo set are unpacked."""
    return _sub(workspace, "datasets")


def _sub(workspace: Path, name: str) -> Path:
    path = Path(workspace) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
