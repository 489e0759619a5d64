"""Small datasets made on the fly: classes a frozen random network can tell apart by colour."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_report_header(config) -> str:
    """Free space where the tests write: a full disk fails tests far from its cause."""
    free = shutil.disk_usage(tempfile.gettempdir()).free
    return f"free space in {tempfile.gettempdir()}: {free / 2**30:.1f} GiB"


COLOURS = {"red": (200, 40, 30), "green": (40, 180, 60), "blue": (30, 60, 200)}


def colour_image(rgb, size=32, seed=0) -> Image.Image:
    """A noisy patch of one colour with a random lighter square: varied, yet easy to classify."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    x, y = rng.integers(0, size // 2, 2)
    square = (slice(y, y + size // 3), slice(x, x + size // 3))
    pixels[square] = np.clip(pixels[square] + 60, 0, 255)
    return Image.fromarray(pixels.astype("uint8"))


def make_folder_dataset(root: Path, per_class=12, size=32,
                        classes=("red", "green", "blue")) -> Path:
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(COLOURS[name], size, seed=1000 * c + i).save(folder / f"{name}_{i}.png")
    return root


def make_kaggle_dataset(root: Path, per_class=12, size=32) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for c, (name, rgb) in enumerate([("cat", COLOURS["red"]), ("dog", COLOURS["blue"])]):
        for i in range(per_class):
            colour_image(rgb, size, seed=1000 * c + i).save(root / f"{name}.{i}.jpg", quality=90)
    return root


def huge_png_header(path: Path, width=16000, height=16000) -> None:
    """A valid PNG signature and header that claims 256 megapixels (no pixel data needed)."""
    def chunk(kind, data):
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "colours")


@pytest.fixture
def kaggle_dataset(tmp_path) -> Path:
    return make_kaggle_dataset(tmp_path / "kaggle")


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "workspace"
    monkeypatch.setenv("TRANSFER_LAB_WORKSPACE", str(path))
    return path
