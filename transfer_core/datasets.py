"""Find a dataset's images, check each by decoding it, and split it into train/validation/test.

Two layouts are read: one sub-folder per class (`cats/`, `dogs/` …) and Kaggle's flat naming
(`cat.123.jpg`, label before the first dot). A split is saved as a manifest (JSON) that every
later step reads, so the exact files of a run are always known.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import config
from .errors import DatasetError, NotEnoughImagesError
from .images import IMAGE_EXTENSIONS, check_image
from .storage import write_json_atomic

SPLITS = ("train", "validation", "test")
# Per class, in index order: the blog post's 2000/1000/1000 and the book's 1000/500/500.
PRESETS = {"chapter": (2000, 1000, 1000), "book": (1000, 500, 500)}


@dataclass(frozen=True)
class ImageEntry:
    path: str
    label: str


@dataclass
class ScanReport:
    """What a scan found: usable images per class and every skipped file with its reason."""

    root: str
    layout: str  # "folders" or "kaggle"
    classes: list[str]
    images: list[ImageEntry]
    skipped: list[dict] = field(default_factory=list)  # {"path", "label", "reason"}
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counter = Counter(entry.label for entry in self.images)
        return {name: counter.get(name, 0) for name in self.classes}

    def skipped_counts(self) -> dict[str, int]:
        counter = Counter(item["label"] for item in self.skipped)
        return {name: counter.get(name, 0) for name in self.classes}

    def summary(self) -> dict:
        return {"root": self.root, "layout": self.layout, "classes": self.classes,
                "usable": self.counts(), "skipped_per_class": self.skipped_counts(),
                "skipped": self.skipped, "seconds": round(self.seconds, 3)}


def natural_key(text: str) -> list:
    """Sort key where digit runs compare as numbers: cat.2 < cat.10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def find_images(root: str | Path) -> tuple[str, list[ImageEntry]]:
    """All image files under `root` with their labels, in natural order; and the layout name.

    A root that holds nothing but one folder is descended into (an unpacked zip's top folder).
    """
    root = _checked_root(root)
    subfolders = [p for p in sorted(root.iterdir()) if p.is_dir() and not _hidden(p)]
    loose = [p for p in root.iterdir() if _is_image_name(p)]
    if len(subfolders) == 1 and not loose:
        return find_images(subfolders[0])
    if subfolders and any(_images_under(folder) for folder in subfolders):
        entries = [ImageEntry(str(path), folder.name)
                   for folder in subfolders for path in _images_under(folder)]
        return "folders", entries
    entries = [ImageEntry(str(path), path.name.split(".", 1)[0].lower()) for path in loose]
    entries.sort(key=lambda e: natural_key(Path(e.path).name))
    return "kaggle", entries


def scan(root: str | Path, workers: int | None = None,
         progress: Callable[[int, int], None] | None = None) -> ScanReport:
    """Find and fully decode every image under `root` (in parallel); report usable and skipped.

    Raises DatasetError when fewer than two classes have usable images.
    """
    started = time.perf_counter()
    layout, entries = find_images(root)
    reasons = _check_all([entry.path for entry in entries], workers, progress)
    usable = [entry for entry, reason in zip(entries, reasons) if reason is None]
    skipped = [{"path": entry.path, "label": entry.label, "reason": reason}
               for entry, reason in zip(entries, reasons) if reason is not None]
    classes = sorted({entry.label for entry in entries}, key=natural_key)
    report = ScanReport(str(Path(root).resolve()), layout, classes, usable, skipped,
                        time.perf_counter() - started)
    found = [name for name, n in report.counts().items() if n > 0]
    if len(found) < 2:
        raise DatasetError(
            f"{root} has usable images for {len(found)} class(es) ({', '.join(found) or 'none'}); "
            "a classifier needs at least two. Use one sub-folder per class (cats/, dogs/) or "
            "Kaggle-style names (cat.1.jpg, dog.1.jpg).")
    return report


def _check_all(paths: list[str], workers: int | None,
               progress: Callable[[int, int], None] | None) -> list[str | None]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 500:  # starting worker processes costs ~1 s
        results = []
        for done, path in enumerate(paths, 1):
            results.append(check_image(path))
            if progress and (done % 50 == 0 or done == len(paths)):
                progress(done, len(paths))
        return results
    # "fork" where there is one: a spawned child re-imports the parent's __main__, which inside
    # Streamlit is the app script itself. The children only run Pillow, never TensorFlow, so
    # TensorFlow's threads in the parent do not matter to them.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    chunk = max(16, min(256, len(paths) // (workers * 8)))
    results = []
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for result in pool.map(check_image, paths, chunksize=chunk):
            results.append(result)
            if progress and (len(results) % 200 == 0 or len(results) == len(paths)):
                progress(len(results), len(paths))
    return results


@dataclass
class SplitRequest:
    """How to split: a preset, per-class counts, or fractions (with a seed for shuffling)."""

    preset: str | None = None  # the chapter's, when nothing else is chosen
    counts: tuple[int, int, int] | None = None
    fractions: tuple[float, float, float] | None = None
    seed: int = 1337

    def __post_init__(self):
        chosen = [name for name in ("preset", "counts", "fractions") if getattr(self, name)]
        if not chosen:
            self.preset, chosen = "chapter", ["preset"]
        if len(chosen) != 1:
            raise DatasetError("Choose exactly one of: a preset, counts, or fractions.")
        if self.preset and self.preset not in PRESETS:
            raise DatasetError(f"Unknown preset {self.preset!r}; choose one of "
                               f"{', '.join(PRESETS)}.")
        if self.counts is not None:
            self.counts = tuple(int(n) for n in self.counts)
            if len(self.counts) != 3 or min(self.counts) < 0 or sum(self.counts) == 0:
                raise DatasetError("counts must be three whole numbers ≥ 0 "
                                   "(train, validation, test), not all zero.")
        if self.fractions is not None:
            self.fractions = tuple(float(f) for f in self.fractions)
            if (len(self.fractions) != 3 or min(self.fractions) < 0
                    or not 0 < sum(self.fractions) <= 1.0 + 1e-9):
                raise DatasetError("fractions must be three numbers ≥ 0 "
                                   "(train, validation, test) that add up to at most 1.")

    def describe(self) -> str:
        if self.preset:
            return f"preset {self.preset} ({'/'.join(map(str, PRESETS[self.preset]))} per class)"
        if self.counts:
            return f"counts {'/'.join(map(str, self.counts))} per class, seed {self.seed}"
        return f"fractions {'/'.join(f'{f:g}' for f in self.fractions)}, seed {self.seed}"


def split_counts(available: int, request: SplitRequest) -> tuple[int, int, int]:
    """How many of a class's `available` images go to each split."""
    if request.preset or request.counts:
        return PRESETS[request.preset] if request.preset else request.counts
    train_f, val_f, test_f = request.fractions
    n_val, n_test = round(available * val_f), round(available * test_f)
    n_train = (available - n_val - n_test if abs(sum(request.fractions) - 1) < 1e-9
               else round(available * train_f))
    return n_train, n_val, n_test


def split(report: ScanReport, request: SplitRequest) -> "Manifest":
    """Assign each usable image to a split, per class (stratified) and deterministically.

    Presets take files in index order (cat.0 … cat.1999 to train, as in the chapter); custom
    counts and fractions shuffle each class with the request's seed first.
    """
    by_class = {name: [e for e in report.images if e.label == name] for name in report.classes}
    rows = []
    for name, entries in by_class.items():
        wanted = split_counts(len(entries), request)
        _check_enough(name, len(entries), wanted, request)
        if not request.preset:
            entries = entries[:]
            random.Random(f"{request.seed}:{name}").shuffle(entries)
        start = 0
        for split_name, count in zip(SPLITS, wanted):
            rows += [(e.path, name, split_name) for e in entries[start:start + count]]
            start += count
    classes = [name for name in report.classes if by_class[name]]
    return Manifest(root=report.root, classes=classes, rows=rows, request=asdict(request))


def _check_enough(name: str, available: int, wanted: tuple[int, int, int],
                  request: SplitRequest) -> None:
    if available == 0:
        return  # a class whose every file was skipped: reported by the scan, left out here
    fractions = request.fractions or (0, 0, 0)
    starved = [s for s, n, f in zip(SPLITS, wanted, fractions) if f > 0 and n == 0]
    if sum(wanted) > available or starved:
        need = "/".join(map(str, wanted))
        raise NotEnoughImagesError(
            f"Class {name!r} has {available} usable images, but {request.describe()} needs "
            f"{need} (train/validation/test){' — ' + ', '.join(starved) + ' would be empty' if starved else ''}. "
            "Choose smaller counts or fractions, or add images.")


@dataclass
class Manifest:
    """The files of each split with their labels: what every later step reads."""

    root: str
    classes: list[str]
    rows: list[tuple[str, str, str]]  # (path, label, split)
    request: dict
    path: str | None = None  # where it is saved

    def files(self, split_name: str) -> tuple[list[str], list[int]]:
        """Paths and class indices of one split, in manifest order."""
        index = {name: i for i, name in enumerate(self.classes)}
        chosen = [(p, index[label]) for p, label, s in self.rows if s == split_name]
        return [p for p, _ in chosen], [i for _, i in chosen]

    def counts(self) -> dict[str, dict[str, int]]:
        counter = Counter((s, label) for _, label, s in self.rows)
        return {s: {name: counter.get((s, name), 0) for name in self.classes} for s in SPLITS}

    def fingerprint(self) -> str:
        """Changes whenever a file, label or split changes."""
        digest = hashlib.sha256(json.dumps([self.classes, self.rows]).encode())
        return digest.hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"format": 1, "root": self.root, "classes": self.classes, "request": self.request,
                "counts": self.counts(),
                "files": [{"path": p, "label": label, "split": s} for p, label, s in self.rows]}

    def save(self, workspace: str | Path, name: str | None = None) -> Path:
        """Write the manifest into the workspace's manifests folder (atomically)."""
        name = name or f"{Path(self.root).name}-{_request_slug(self.request)}-{self.fingerprint()[:8]}"
        path = config.manifests_dir(Path(workspace)) / f"{name}.json"
        write_json_atomic(path, self.to_dict())
        self.path = str(path)
        return path


def _request_slug(request: dict) -> str:
    if request.get("preset"):
        return request["preset"]
    if request.get("counts"):
        return "counts-" + "-".join(map(str, request["counts"]))
    return "fractions-" + "-".join(f"{f:g}" for f in request["fractions"])


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        rows = [(f["path"], f["label"], f["split"]) for f in data["files"]]
        manifest = Manifest(data["root"], data["classes"], rows, data.get("request", {}), str(path))
    except FileNotFoundError:
        raise DatasetError(f"No manifest at {path}. Make one with: "
                           "python -m transfer_core split DATA_FOLDER") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a Transfer Lab manifest ({exc}).") from None
    return manifest


def list_manifests(workspace: str | Path) -> list[Path]:
    """Saved manifests, newest first."""
    folder = config.manifests_dir(Path(workspace))
    return sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)


def lay_out(manifest: Manifest, dest: str | Path, copy: bool = False) -> Path:
    """Lay the split out as folders (`train/cats/cat.0.jpg` …) like the chapter's
    `cats_and_dogs_small`, with symbolic links (or copies)."""
    dest = Path(dest)
    for path, label, split_name in manifest.rows:
        target = dest / split_name / label / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        if copy:
            shutil.copy2(path, target)
        else:
            target.symlink_to(Path(path).resolve())
    return dest


def _checked_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"There is no folder {root}.")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder of images.")
    return root.resolve()


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "__MACOSX"))


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(path) and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob("*") if _is_image_name(p)
             and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))

