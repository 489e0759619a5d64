"""What every benchmark section runs on: the chapter's split of the flat Kaggle folder, both as a
transfer_core manifest and as the chapter's folder layout, over exactly the same files.

Also the small tools the sections share: throwaway folders, Keras resets between measurements,
a validation timer, and the rows of the final table.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras

from bench import chapter_baseline as chapter
from transfer_core.datasets import SPLITS, Manifest

CLASSES = ("cat", "dog")  # the Kaggle names: cat.0.jpg … dog.3999.jpg
CHAPTER_COUNTS = (2000, 1000, 1000)  # per class: train, validation, test


class BenchError(Exception):
    """A benchmark that cannot run as asked (missing photos, a run that failed)."""


def chapter_rows(data: str, counts) -> list[tuple[str, str, str]]:
    """(path, label, split) in index order, as the chapter splits: per class the first
    counts[0] images train, the next counts[1] validate, the next counts[2] test."""
    rows, start = [], 0
    for split, count in zip(SPLITS, counts):
        for label in CLASSES:
            rows += [(str(Path(data) / f"{label}.{i}.jpg"), label, split)
                     for i in range(start, start + count)]
        start += count
    missing = [path for path, _, _ in rows if not Path(path).is_file()]
    if missing:
        raise BenchError(f"{len(missing)} photos of the split {tuple(counts)} are missing from "
                         f"{data} (first: {missing[0]}); pass --data with the dogs-vs-cats folder.")
    return rows


def chapter_manifest(data: str, counts, workspace: Path) -> Manifest:
    """The split as a saved transfer_core manifest (what `split --preset chapter` makes)."""
    manifest = Manifest(root=str(Path(data).resolve()), classes=list(CLASSES),
                        rows=chapter_rows(data, counts),
                        request={"counts": list(counts), "order": "index"})
    manifest.save(workspace, "bench-" + "-".join(map(str, counts)))
    return manifest


def chapter_layout(data: str, counts, folder: Path) -> str:
    """The same split as the chapter's `train/cats/…` folders of symlinks."""
    chapter_rows(data, counts)  # the same check and message as the manifest
    with quiet():
        return chapter.make_chapter_layout(data, folder, counts)


def fresh_dir(settings, name: str) -> Path:
    """A new empty folder under the benchmark's work folder: a cold cache, a new run."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=settings.work))


def reset_keras() -> None:
    """Drop the models of the previous measurement so each starts from the same state."""
    keras.backend.clear_session()
    gc.collect()


def quiet():
    """Keras prints "Found N images" and progress on stdout: keep stdout for the table."""
    return contextlib.redirect_stdout(sys.stderr)


class ValidationTimer(keras.callbacks.Callback):
    """Measurement only: the seconds of each of fit()'s validation passes inside
    `training.train`, given through its `callbacks` hook; `seconds` has one entry per pass."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_test_begin(self, logs=None):
        self._started = time.perf_counter()

    def on_test_end(self, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def log(section: str, message: str) -> None:
    print(f"[{section}] {message}", file=sys.stderr, flush=True)


def median(values) -> float:
    return statistics.median(values)


def row(section: str, what: str, ours: str, reference: str = "", ratio: float | None = None,
        target: str = "", ok: bool | None = None) -> dict:
    """One line of the final table; `ratio` is ours ÷ reference in speed (> 1: ours faster)."""
    return {"section": section, "what": what, "ours": ours, "reference": reference,
            "ratio": ratio, "target": target, "ok": ok}
