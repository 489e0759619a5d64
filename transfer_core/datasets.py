"""Find a dataset's images, check each by decoding it, and split it into train/validation/test.

Three layouts are read: one sub-folder per class (`cats/`, `dogs/` …), Kaggle's flat naming
(`cat.123.jpg`, label before the first dot), and folders already split (`train/cats/`,
`val/cats/` …, as `image_dataset_from_directory` and PyTorch's ImageFolder expect). A split is
saved as a manifest (JSON) that every later step reads, so the exact files of a run are known.
"""

from __future__ import annotations

import errno
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
from collections.abc import Callable

from . import config, duplicates
from .duplicates import DuplicatePair, FingerprintStore, check_and_fingerprint
from .errors import DatasetError, NotEnoughImagesError
from .images import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS
from .storage import write_json_atomic

SPLITS = ("train", "validation", "test")
# Per class, in index order: the blog post's 2000/1000/1000 and the book's 1000/500/500.
PRESETS = {"chapter": (2000, 1000, 1000), "book": (1000, 500, 500)}
# The split the folders already have (layout "split-folders"): not a count per class.
AS_LAID_OUT = "as-laid-out"
# Top-level folder names (any case) that mean a split, not a class.
SPLIT_FOLDER_NAMES = {"train": "train", "training": "train", "val": "validation",
                      "valid": "validation", "validation": "validation", "dev": "validation",
                      "test": "test", "testing": "test"}
# Where the missing test split comes from when only train and validation folders exist.
TEST_FROM = ("train", "validation")
LAYOUT_TEXT = {"folders": "one folder per class", "kaggle": "Kaggle names (cat.1.jpg)"}


@dataclass(frozen=True)
class ImageEntry:
    path: str
    label: str
    split: str | None = None  # "train", "validation" or "test" in the split-folders layout


@dataclass
class ScanReport:
    """What a scan found: usable images per class and every skipped file with its reason."""

    root: str
    layout: str  # "folders", "kaggle" or "split-folders"
    classes: list[str]
    images: list[ImageEntry]
    skipped: list[dict] = field(default_factory=list)  # {"path", "label", "reason"}
    seconds: float = 0.0
    ignored: int = 0  # files not named as pictures (.txt, .csv, hidden files): counted only
    duplicates: list[DuplicatePair] = field(default_factory=list)  # among the usable images
    # split-folders layout: each split found and the folder that holds it ({"validation": "val"})
    split_folders: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what differs between the split folders

    def layout_text(self) -> str:
        """The layout in words: "split folders: train, val" or "one folder per class"."""
        if self.layout == "split-folders":
            return "split folders: " + ", ".join(self.split_folders.values())
        return LAYOUT_TEXT.get(self.layout, self.layout)

    def counts_per_split(self) -> dict[str, dict[str, int]]:
        """Usable images per split folder and class (split-folders layout only)."""
        counter = Counter((entry.split, entry.label) for entry in self.images)
        return {s: {name: counter.get((s, name), 0) for name in self.classes}
                for s in self.split_folders}

    def counts(self) -> dict[str, int]:
        counter = Counter(entry.label for entry in self.images)
        return {name: counter.get(name, 0) for name in self.classes}

    def skipped_counts(self) -> dict[str, int]:
        counter = Counter(item["label"] for item in self.skipped)
        return {name: counter.get(name, 0) for name in self.classes}

    def summary(self) -> dict:
        return {"root": self.root, "layout": self.layout, "classes": self.classes,
                "usable": self.counts(), "skipped_per_class": self.skipped_counts(),
                "skipped": self.skipped, "ignored": self.ignored,
                "seconds": round(self.seconds, 3),
                "duplicates": duplicates.summary(duplicates.locate(self.duplicates, [])),
                "layout_text": self.layout_text(), "split_folders": self.split_folders,
                "counts_per_split": self.counts_per_split(), "notes": self.notes}


def natural_key(text: str) -> list:
    """Sort key where digit runs compare as numbers: cat.2 < cat.10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def find_images(root: str | Path, roots: list[Path] | None = None) -> tuple[str, list[ImageEntry]]:
    """All image files under `root` with their labels, in natural order; and the layout name.

    A root that holds nothing but one folder is descended into (an unpacked zip's top folder).
    With `roots`, nothing that resolves outside them is listed (see `scan`).
    """
    found = _Walk(roots).dataset(_checked_root(root, roots))
    return found.layout, found.entries


def scan(root: str | Path, workers: int | None = None,
         progress: Callable[[int, int], None] | None = None,
         roots: list[Path] | None = None) -> ScanReport:
    """Find and fully decode every image under `root` (in parallel); report usable and skipped,
    and the pairs of usable images that are copies of one picture (duplicates.py).

    `roots`: the folders the caller may read (the app passes `config.allowed_roots`); every
    folder and file met is resolved, and a link that leads outside them is skipped with the
    reason, never read. None reads wherever links lead (the CLI, on the user's own machine).
    Raises DatasetError for a bad path and when fewer than two classes have usable images.
    """
    started = time.perf_counter()
    checked_root = _checked_root(root, roots)
    found = _Walk(roots).dataset(checked_root)
    entries = found.entries
    with FingerprintStore() as prints:
        reasons = _check_all([entry.path for entry in entries], prints, workers, progress)
        usable = [entry for entry, reason in zip(entries, reasons) if reason is None]
        pairs = prints.pairs([entry.path for entry in usable])
    skipped = found.skipped + [{"path": entry.path, "label": entry.label, "reason": reason}
                               for entry, reason in zip(entries, reasons) if reason is not None]
    labels = {entry.label for entry in entries} | {item["label"] for item in found.skipped}
    classes = sorted(labels - {""}, key=natural_key)
    report = ScanReport(str(checked_root), found.layout, classes, usable, skipped,
                        time.perf_counter() - started, found.ignored, pairs,
                        found.split_folders, _split_notes(found.split_folders, classes, usable))
    usable_classes = [name for name, n in report.counts().items() if n > 0]
    if len(usable_classes) < 2:
        example = (f" {len(skipped)} file(s) skipped, e.g. {skipped[0]['reason']}."
                   if skipped else "")
        raise DatasetError(
            f"{_shown(root)} has usable images for {len(usable_classes)} class(es) "
            f"({', '.join(usable_classes) or 'none'}); a classifier needs at least two. Use one "
            f"sub-folder per class (cats/, dogs/) or Kaggle-style names (cat.1.jpg, dog.1.jpg)."
            f"{example}")
    return report


def _split_notes(split_folders: dict[str, str], classes: list[str],
                 usable: list[ImageEntry]) -> list[str]:
    """What differs between the split folders: a class missing from one, or a split missing."""
    if not split_folders:
        return []
    have = {(entry.split, entry.label) for entry in usable}
    notes = []
    for name in classes:
        missing = [folder for split_name, folder in split_folders.items()
                   if (split_name, name) not in have]
        if missing and len(missing) < len(split_folders):  # none at all: shown as skipped
            notes.append(f"Class {name!r} has no usable images in "
                         f"{', '.join(f + '/' for f in missing)}: the classes differ between "
                         "the split folders.")
    if "test" not in split_folders:
        notes.append("There is no test folder: choose how to get a test split "
                     "(part of the training folder, or the validation folder).")
    elif "validation" not in split_folders:
        notes.append("There is no validation folder: as laid out, part of the training "
                     "folder becomes the validation split.")
    return notes


@dataclass
class _Found:
    layout: str
    entries: list[ImageEntry]
    skipped: list[dict]
    ignored: int
    split_folders: dict[str, str] = field(default_factory=dict)


class _Walk:
    """One pass over a folder tree. Every link met is resolved: one that leaves `roots`, leads
    nowhere or back to a folder already read is skipped with its reason and never followed,
    so a link loop cannot hang the scan. A plain entry needs no check: it lies inside its
    folder, whose real path was checked (or is the root's)."""

    def __init__(self, roots: list[Path] | None):
        self.roots = roots
        self.read_folders: set[Path] = set()  # real paths
        self.skipped: list[dict] = []
        self.ignored = 0

    def dataset(self, root: Path, real: Path | None = None) -> _Found:
        real = real or root
        self.read_folders.add(real)
        folders, loose, refused = self._list(root, real)
        if len(folders) == 1 and not loose and not refused:
            return self.dataset(*folders[0])
        splits = _split_folder_names(folders)
        if splits:
            return self._split_dataset(folders, splits, loose, refused)
        under = {path: self._pictures_under(path, path_real) for path, path_real in folders}
        if any(under.values()):
            for path, reason, is_folder in refused:
                self._skip(path, path.name if is_folder else "", reason)
            for path in loose:
                self._skip(path, "", f"{path.name} is not inside a class folder")
            entries = [ImageEntry(str(p), folder.name) for folder, paths in under.items()
                       for p in paths]
            return _Found("folders", entries, self.skipped, self.ignored)
        for path, reason, is_folder in refused:
            self._skip(path, "" if is_folder else _kaggle_label(path), reason)
        loose.sort(key=lambda p: natural_key(p.name))
        entries = [ImageEntry(str(p), _kaggle_label(p)) for p in loose]
        return _Found("kaggle", entries, self.skipped, self.ignored)

    def _split_dataset(self, folders, splits: dict[str, str], loose, refused) -> _Found:
        """train/cats/…, val/cats/…: the class folders inside each split folder. A split
        folder without class folders is no split layout: the caller reads classes instead."""
        entries, by_name = [], {path.name: (path, real) for path, real in folders}
        for folder_name, split_name in splits.items():  # train, validation, test
            path, real = by_name[folder_name]
            classes, files, refused_inside = self._list(path, real)
            for item_path, reason, is_folder in refused_inside:
                self._skip(item_path, item_path.name if is_folder else "", reason)
            for item_path in files:
                self._skip(item_path, "", f"{path.name}/{item_path.name} is not inside a "
                                          "class folder")
            entries += [ImageEntry(str(p), folder.name, split_name)
                        for folder, folder_real in classes
                        for p in self._pictures_under(folder, folder_real)]
        for path, reason, _is_folder in refused:
            self._skip(path, "", reason)
        for path in loose:
            self._skip(path, "", f"{path.name} is not inside a split folder")
        return _Found("split-folders", entries, self.skipped, self.ignored,
                      {name: folder for folder, name in splits.items()})

    def _pictures_under(self, top: Path, top_real: Path) -> list[Path]:
        """Picture files anywhere under a class folder, in natural order of their subpath."""
        found, stack = [], [(top, top_real)]
        while stack:  # not recursion: a deep tree must not hit Python's recursion limit
            folder, real = stack.pop()
            folders, files, refused = self._list(folder, real)
            for path, reason, _ in refused:
                self._skip(path, top.name, reason)
            stack += folders
            found += files
        return sorted(found, key=lambda p: natural_key(str(p.relative_to(top))))

    def _list(self, folder: Path, real: Path):
        """(sub-folders as (path, real path), picture files, refused as (path, reason, folder?))
        directly in `folder`, hidden entries left out."""
        try:
            with os.scandir(folder) as listing:
                items = sorted(listing, key=lambda item: natural_key(item.name))
        except OSError as exc:
            reason = f"{folder.name} cannot be read ({exc.strerror or exc})"
            return [], [], [(folder, reason, True)]
        folders, files, refused = [], [], []
        for item in items:
            path = Path(item.path)
            if _hidden(path):
                self.ignored += not item.is_dir()
                continue
            target, kind, why_not = self._target(item, real / item.name)
            if why_not and (kind == "folder" or _is_picture_name(path)):
                refused.append((path, f"{item.name} {why_not}", kind == "folder"))
            elif kind == "file" and not why_not and _is_picture_name(path):
                files.append(path)
            elif kind != "folder" or why_not:  # .txt, .csv, links to them: counted only
                self.ignored += 1
            elif target not in self.read_folders:
                self.read_folders.add(target)
                folders.append((path, target))
            elif item.is_symlink():  # a plain folder cannot be met twice; a link can
                refused.append((path, f"{item.name} links to a folder already read", True))
        return folders, files, refused

    def _target(self, item: os.DirEntry, real: Path) -> tuple[Path | None, str, str | None]:
        """The real path behind a directory entry, "folder", "file" or "other", and why it is
        not followed (None when it is)."""
        if not item.is_symlink():
            kind = ("folder" if item.is_dir(follow_symlinks=False)
                    else "file" if item.is_file(follow_symlinks=False) else "other")
            return real, kind, None
        try:
            target = Path(item.path).resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a link loop, on Python < 3.13
            return None, "other", "is a link that leads nowhere (its target is missing or loops)"
        kind = "folder" if target.is_dir() else "file" if target.is_file() else "other"
        if self.roots is not None and not config.is_allowed(target, self.roots):
            return target, kind, "links outside the allowed folders"
        return target, kind, None

    def _skip(self, path: Path, label: str, reason: str) -> None:
        self.skipped.append({"path": str(path), "label": label, "reason": reason})


def _split_folder_names(folders: list[tuple[Path, Path]]) -> dict[str, str]:
    """{folder name: split} when every top folder is a split folder (train, val, test …, any
    case) that holds at least one sub-folder, in train/validation/test order; else {}.
    Two folders for one split (val/ and validation/) are a DatasetError."""
    names = [path.name for path, _ in folders]
    splits = [SPLIT_FOLDER_NAMES.get(name.lower()) for name in names]
    if len(folders) < 2 or None in splits:
        return {}
    if not all(_has_sub_folder(real) for _, real in folders):
        return {}  # classes named like splits (train/ and test/ full of photos)
    twice = [s for s in SPLITS if splits.count(s) > 1]
    if twice:
        both = [n for n, s in zip(names, splits) if s == twice[0]]
        raise DatasetError(f"{' and '.join(both)} are both a {twice[0]} folder; keep one "
                           "(merge or rename the other).")
    return dict(sorted(zip(names, splits), key=lambda item: SPLITS.index(item[1])))


def _has_sub_folder(folder: Path) -> bool:
    try:
        with os.scandir(folder) as listing:
            return any(item.is_dir() and not _hidden(Path(item.path)) for item in listing)
    except OSError:
        return False


def _check_all(paths: list[str], prints: FingerprintStore, workers: int | None,
               progress: Callable[[int, int], None] | None) -> list[str | None]:
    """None or the reason it is skipped, of each file; the usable files' fingerprints go to
    `prints` in order as they come (the decode that checks a file fingerprints it too: see
    bench/duplicates.py for the cost), so no list of them is ever held."""
    workers = workers or os.cpu_count() or 1
    reasons: list[str | None] = []

    def keep(result: tuple) -> None:
        reason, fingerprint = result
        reasons.append(reason)
        if reason is None:
            prints.add(fingerprint)

    if workers == 1 or len(paths) < 500:  # starting worker processes costs ~1 s
        for done, path in enumerate(paths, 1):
            keep(check_and_fingerprint(path))
            if progress and (done % 50 == 0 or done == len(paths)):
                progress(done, len(paths))
        return reasons
    # "fork" where there is one: a spawned child re-imports the parent's __main__, which inside
    # Streamlit is the app script itself. The children only run Pillow, never TensorFlow, so
    # TensorFlow's threads in the parent do not matter to them.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    chunk = max(16, min(256, len(paths) // (workers * 8)))
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for result in pool.map(check_and_fingerprint, paths, chunksize=chunk):
            keep(result)
            if progress and (len(reasons) % 200 == 0 or len(reasons) == len(paths)):
                progress(len(reasons), len(paths))
    return reasons


@dataclass
class SplitRequest:
    """How to split: a preset, per-class counts, or fractions (with a seed for shuffling).

    The preset "as-laid-out" keeps the split of split folders; a split the folders lack is
    `holdout` (a fraction) of each class's training folder, shuffled with the seed, except
    that `test_from="validation"` evaluates on the validation folder instead (said plainly
    wherever the test accuracy is shown: that split also chose the best epoch).
    """

    preset: str | None = None  # the chapter's, when nothing else is chosen
    counts: tuple[int, int, int] | None = None
    fractions: tuple[float, float, float] | None = None
    seed: int = 1337
    test_from: str = "train"  # as-laid-out without a test folder: "train" or "validation"
    holdout: float = 0.2

    def __post_init__(self):
        chosen = [name for name in ("preset", "counts", "fractions") if getattr(self, name)]
        if not chosen:
            self.preset, chosen = "chapter", ["preset"]
        if len(chosen) != 1:
            raise DatasetError("Choose exactly one of: a preset, counts, or fractions.")
        if self.preset and self.preset not in PRESETS and self.preset != AS_LAID_OUT:
            raise DatasetError(f"Unknown preset {self.preset!r}; choose one of "
                               f"{', '.join([AS_LAID_OUT, *PRESETS])}.")
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
        if self.test_from not in TEST_FROM:
            raise DatasetError(f"`test_from` must be one of {', '.join(TEST_FROM)}. "
                               f"Received: test_from={self.test_from!r}")
        if not 0 < float(self.holdout) < 1:
            raise DatasetError("`holdout` must be a fraction between 0 and 1, e.g. 0.2. "
                               f"Received: holdout={self.holdout!r}")

    def describe(self) -> str:
        if self.preset == AS_LAID_OUT:
            test = ("test = the validation folder" if self.test_from == "validation"
                    else f"a split without a folder: {self.holdout:g} of the training folder, "
                         f"seed {self.seed}")
            return f"as laid out in the split folders ({test})"
        if self.preset:
            return f"preset {self.preset} ({'/'.join(map(str, PRESETS[self.preset]))} per class)"
        if self.counts:
            return f"counts {'/'.join(map(str, self.counts))} per class, seed {self.seed}"
        return f"fractions {'/'.join(f'{f:g}' for f in self.fractions)}, seed {self.seed}"

    def as_recorded(self, split_folders: dict[str, str]) -> dict:
        """The request as a manifest records it: the as-laid-out keys only for that preset,
        with where the test split came from ("folder", "train" or "validation")."""
        recorded = asdict(self)
        test_from, holdout = recorded.pop("test_from"), recorded.pop("holdout")
        if self.preset == AS_LAID_OUT:
            recorded["test_from"] = "folder" if "test" in split_folders else test_from
            recorded["holdout"] = holdout
            recorded["split_folders"] = split_folders
        return recorded


def split_counts(available: int, request: SplitRequest) -> tuple[int, int, int]:
    """How many of a class's `available` images go to each split."""
    if request.preset or request.counts:
        return PRESETS[request.preset] if request.preset else request.counts
    train_f, val_f, test_f = request.fractions
    n_val, n_test = round(available * val_f), round(available * test_f)
    n_train = (available - n_val - n_test if abs(sum(request.fractions) - 1) < 1e-9
               else round(available * train_f))
    return n_train, n_val, n_test


def split(report: ScanReport, request: SplitRequest) -> Manifest:
    """Assign each usable image to a split, per class (stratified) and deterministically.

    Presets take files in index order (cat.0 … cat.1999 to train, as in the chapter); custom
    counts and fractions shuffle each class with the request's seed first. "as-laid-out"
    keeps the split folders' split (`_split_as_laid_out`).
    """
    if request.preset == AS_LAID_OUT:
        return _split_as_laid_out(report, request)
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
    return Manifest(root=report.root, classes=classes, rows=rows,
                    request=request.as_recorded(report.split_folders))


def _split_as_laid_out(report: ScanReport, request: SplitRequest) -> Manifest:
    """Each file in the split of its folder; a split without a folder is taken from each
    class's training files (`request.holdout`, shuffled with the seed), except a test split
    the user chose to take from validation (the manifest then has no test rows)."""
    given = report.split_folders
    if report.layout != "split-folders":
        raise DatasetError(f"The preset {AS_LAID_OUT} needs split folders (train/, val/ …, each "
                           f"holding class folders); {_shown(report.root)} has "
                           f"{report.layout_text()}. Choose another preset.")
    if "train" not in given:
        raise DatasetError(f"{_shown(report.root)} has no training folder (train/ or "
                           f"training/), only {', '.join(given.values())}/: choose fractions "
                           "to split all its images.")
    held_out = [s for s in ("validation", "test") if s not in given
                and not (s == "test" and request.test_from == "validation")]
    rows = []
    for name in report.classes:
        entries = [e for e in report.images if e.label == name]
        by_split = {s: [e.path for e in entries if e.split == s] for s in SPLITS}
        if entries and not by_split["train"]:
            raise NotEnoughImagesError(
                f"Class {name!r} has no usable images in the training folder "
                f"({given['train']}/), so no model can learn it. Add some, remove the class "
                "from every split folder, or choose fractions to split all its images.")
        for split_name, paths in zip(held_out, _hold_out(name, by_split, held_out, request)):
            by_split[split_name] = paths
        rows += [(p, name, s) for s in SPLITS for p in by_split[s]]
    classes = [name for name in report.classes if any(row[1] == name for row in rows)]
    return Manifest(root=report.root, classes=classes, rows=rows,
                    request=request.as_recorded(given))


def _hold_out(name: str, by_split: dict[str, list[str]], held_out: list[str],
              request: SplitRequest) -> list[list[str]]:
    """`request.holdout` of a class's training files for each split in `held_out` (shuffled
    with the seed); by_split["train"] keeps the rest, in file order."""
    train = by_split["train"]
    if not held_out or not train:
        return []
    count = round(len(train) * request.holdout)
    if count == 0 or len(train) - count * len(held_out) < 1:
        raise NotEnoughImagesError(
            f"Class {name!r} has {len(train)} usable training images: too few to take "
            f"{request.holdout:g} of them for {' and '.join(held_out)} and still train. "
            "Add images, take a larger fraction, or evaluate on the validation folder.")
    shuffled = train[:]
    random.Random(f"{request.seed}:{name}").shuffle(shuffled)
    taken = [shuffled[i * count:(i + 1) * count] for i in range(len(held_out))]
    out = {path for part in taken for path in part}
    by_split["train"] = [path for path in train if path not in out]
    return taken


def _check_enough(name: str, available: int, wanted: tuple[int, int, int],
                  request: SplitRequest) -> None:
    if available == 0:
        return  # a class whose every file was skipped: reported by the scan, left out here
    fractions = request.fractions or (0, 0, 0)
    starved = [s for s, n, f in zip(SPLITS, wanted, fractions) if f > 0 and n == 0]
    if sum(wanted) > available or starved:
        need = "/".join(map(str, wanted))
        empty = f" — {', '.join(starved)} would be empty" if starved else ""
        raise NotEnoughImagesError(
            f"Class {name!r} has {available} usable images, but {request.describe()} needs "
            f"{need} (train/validation/test){empty}. "
            "Choose smaller counts or fractions, or add images.")


@dataclass
class Manifest:
    """The files of each split with their labels: what every later step reads."""

    root: str
    classes: list[str]
    rows: list[tuple[str, str, str]]  # (path, label, split)
    request: dict
    path: str | None = None  # where it is saved
    # Photos left out as copies of others: {"path", "label", "split", "reason", "copy_of", "kind"}
    dropped: list[dict] = field(default_factory=list)

    @property
    def test_is_validation(self) -> bool:
        """The user chose to evaluate on the validation split (split folders without a test
        folder): optimistic, as that split also chose the best epoch."""
        return self.request.get("test_from") == "validation"

    def files(self, split_name: str) -> tuple[list[str], list[int]]:
        """Paths and class indices of one split, in manifest order ("test" is the validation
        split when `test_is_validation`)."""
        if split_name == "test" and self.test_is_validation:
            split_name = "validation"
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
                "files": [{"path": p, "label": label, "split": s} for p, label, s in self.rows],
                "dropped": self.dropped}

    def save(self, workspace: str | Path, name: str | None = None) -> Path:
        """Write the manifest into the workspace's manifests folder (atomically)."""
        name = name or (f"{Path(self.root).name}-{_request_slug(self.request)}-"
                        f"{self.fingerprint()[:8]}")
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
        manifest = Manifest(data["root"], data["classes"], rows, data.get("request", {}), str(path),
                            _dropped(data.get("dropped", [])))  # older manifests have none
    except FileNotFoundError:
        raise DatasetError(f"No manifest at {path}. Make one with: "
                           "python -m transfer_core split DATA_FOLDER") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a Transfer Lab manifest ({exc}).") from None
    return manifest


def _dropped(items) -> list[dict]:
    if not isinstance(items, list) or not all(isinstance(i, dict) and "path" in i for i in items):
        raise TypeError("'dropped' must be a list of files")
    return items


def drop_later_copies(manifest: Manifest, pairs: list[DuplicatePair]) -> Manifest:
    """The same split without the later copy of each duplicate pair (duplicates.later_copies);
    what was dropped and why is recorded in the manifest's `dropped`."""
    drops = duplicates.later_copies(pairs, manifest.rows, SPLITS)
    kept = [row for row in manifest.rows if row[0] not in drops]
    dropped = manifest.dropped + [{"path": p, "label": label, "split": s, **drops[p]}
                                  for p, label, s in manifest.rows if p in drops]
    return Manifest(manifest.root, manifest.classes, kept, manifest.request, dropped=dropped)


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


def _checked_root(root: str | Path, roots: list[Path] | None = None) -> Path:
    """The real path of a folder the user named; DatasetError (one line) for anything else."""
    shown = _shown(root)
    if not str(root).strip():
        raise DatasetError("No folder given: type the path of a folder of images.")
    if "\0" in str(root):
        raise DatasetError(f"The folder path {shown} contains a NUL byte (\\0); type it again.")
    try:
        path = Path(root).expanduser().resolve()
        is_dir, exists = path.is_dir(), path.exists()
    except (OSError, RuntimeError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ENAMETOOLONG:
            raise DatasetError(f"The folder path {shown} is too long ({len(str(root)):,} "
                               "characters): check what was pasted.") from None
        raise DatasetError(f"{shown} cannot be opened ({getattr(exc, 'strerror', None) or exc})."
                           ) from None
    if not exists:
        raise DatasetError(f"There is no folder {shown}.")
    if not is_dir:
        raise DatasetError(f"{shown} is a file, not a folder of images.")
    if roots is not None and not config.is_allowed(path, roots):
        raise DatasetError(f"{shown} is outside the folders this app may read. "
                           "Set TRANSFER_LAB_ROOTS to allow it.")
    return path


def _shown(root: str | Path) -> str:
    """A path as a message can show it: on one line, at most about 80 characters."""
    text = repr(str(root))[1:-1]  # NUL and newlines as escapes
    return text if len(text) <= 80 else f"{text[:56]}…{text[-20:]}"


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "__MACOSX"))


def _is_picture_name(path: Path) -> bool:
    """A name we decode (its content decides) or one of a picture format we list as skipped."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in OTHER_IMAGE_EXTENSIONS


def _kaggle_label(path: Path) -> str:
    return path.name.split(".", 1)[0].lower()
