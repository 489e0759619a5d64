"""Find a dataset's images, check each by decoding it, and split it into train/validation/test.

Three layouts are read: one sub-folder per class (`cats/`, `dogs/` …), Kaggle's flat naming
(`cat.123.jpg`, label before the first dot), and folders already split (`train/cats/`,
`val/cats/` …, as `image_dataset_from_directory` and PyTorch's ImageFolder expect). A split is
saved as a manifest (JSON) that every later step reads, so the exact files of a run are known.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import re
import shutil
import time
from array import array
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from . import config, duplicates
from .compact import FileTable, StringTable, byte_view, natural_order
from .duplicates import DuplicatePair, FingerprintStore, check_and_fingerprint
from .errors import DatasetError, NotEnoughImagesError
from .images import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS
from .storage import json_bytes, write_pieces_atomic

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
_CODES_AT_ONCE = 16384  # files whose label and split numbers are counted at once


@dataclass(frozen=True)
class ImageEntry:
    path: str
    label: str
    split: str | None = None  # "train", "validation" or "test" in the split-folders layout


class ImageTable(FileTable):
    """A scan's images held compactly (compact.FileTable): a sequence of ImageEntry."""

    @staticmethod
    def _fields(item) -> tuple:
        return item.path, item.label, item.split

    @staticmethod
    def _item(path: str, label: str, split: str | None) -> ImageEntry:
        return ImageEntry(path, label, split)


class RowTable(FileTable):
    """A manifest's rows held compactly (compact.FileTable): a sequence of (path, label,
    split) tuples."""


class PathList(Sequence):
    """The paths of a FileTable, as a read-only sequence made on access."""

    def __init__(self, table: FileTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> str:
        return self.table.path(range(len(self.table))[index])


@dataclass
class ScanReport:
    """What a scan found: usable images per class and every skipped file with its reason."""

    root: str
    layout: str  # "folders", "kaggle" or "split-folders"
    classes: list[str]
    images: Sequence[ImageEntry]  # an ImageTable from `scan` (a list works too)
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
        splits = list(self.split_folders)
        counter = _pair_counts(ImageTable.of(self.images), splits, self.classes)
        return {s: {name: int(counter[i, k]) for k, name in enumerate(self.classes)}
                for i, s in enumerate(splits)}

    def counts(self) -> dict[str, int]:
        counter = _pair_counts(ImageTable.of(self.images), [None], self.classes, any_split=True)
        return {name: int(counter[0, k]) for k, name in enumerate(self.classes)}

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


def _pair_counts(table: FileTable, splits: list, labels: list[str],
                 any_split: bool = False) -> np.ndarray:
    """counts[i, k]: the files of split splits[i] and label labels[k] (every split in row 0
    when `any_split`), from the table's numbers: no object per file."""
    counts = np.zeros(len(splits) * len(labels), np.int64)
    for start in range(0, len(table), _CODES_AT_ONCE):  # small temporaries, however many
        part = slice(start, start + _CODES_AT_ONCE)
        label_codes = table.label_codes(labels, part)
        split_codes = (np.zeros(len(label_codes), np.int32) if any_split
                       else table.split_codes(splits, part))
        known = (label_codes >= 0) & (split_codes >= 0)
        cells = split_codes[known] * len(labels) + label_codes[known]
        counts += np.bincount(cells, minlength=len(counts))
    return counts.reshape(len(splits), len(labels))


def natural_key(text: str) -> list:
    """Sort key where digit runs compare as numbers: cat.2 < cat.10 (compact.natural_order
    sorts many names by it without a list of keys)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def find_images(root: str | Path, roots: list[Path] | None = None) -> tuple[str, ImageTable]:
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
    labels = set(entries.present_labels()) | {item["label"] for item in found.skipped}
    classes = sorted(labels - {""}, key=natural_key)
    with FingerprintStore() as prints:
        reasons = _check_all(entries.paths(), len(entries), prints, workers, progress)
        skipped = found.skipped + [{"path": entries.path(i), "label": entries[i].label,
                                    "reason": reason} for i, reason in reasons.items()]
        if reasons:  # a table of the usable ones, the first let go before the pair search
            found.entries = entries = entries.take(i for i in range(len(entries))
                                                   if i not in reasons)
        usable = entries
        pairs = prints.pairs(PathList(usable))
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
                 usable: ImageTable) -> list[str]:
    """What differs between the split folders: a class missing from one, or a split missing."""
    if not split_folders:
        return []
    splits = list(split_folders)
    have = _pair_counts(usable, splits, classes)
    notes = []
    for k, name in enumerate(classes):
        missing = [folder for i, folder in enumerate(split_folders.values()) if not have[i, k]]
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
    entries: ImageTable
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
        if len(folders) == 1 and not len(loose) and not refused:
            return self.dataset(*folders[0])
        splits = _split_folder_names(folders)
        if splits:
            return self._split_dataset(root, folders, splits, loose, refused)
        under = [self._pictures_under(path, path_real, path.name)
                 for path, path_real in folders]
        if any(len(table) for table in under):
            for path, reason, is_folder in refused:
                self._skip(path, path.name if is_folder else "", reason)
            for name in loose:
                self._skip(root / name, "", f"{name} is not inside a class folder")
            entries = ImageTable()
            for table in under:
                entries.extend_table(table)
            return _Found("folders", entries, self.skipped, self.ignored)
        for path, reason, is_folder in refused:
            self._skip(path, "" if is_folder else _kaggle_label(path.name), reason)
        entries = ImageTable.of_names(_folder_text(root), loose,  # in natural order: _list's
                                      map(_kaggle_label, loose))
        return _Found("kaggle", entries, self.skipped, self.ignored)

    def _split_dataset(self, root: Path, folders, splits: dict[str, str], loose,
                       refused) -> _Found:
        """train/cats/…, val/cats/…: the class folders inside each split folder. A split
        folder without class folders is no split layout: the caller reads classes instead."""
        entries, by_name = ImageTable(), {path.name: (path, real) for path, real in folders}
        for folder_name, split_name in splits.items():  # train, validation, test
            path, real = by_name[folder_name]
            classes, files, refused_inside = self._list(path, real)
            for item_path, reason, is_folder in refused_inside:
                self._skip(item_path, item_path.name if is_folder else "", reason)
            for name in files:
                self._skip(path / name, "", f"{path.name}/{name} is not inside a class folder")
            for folder, folder_real in classes:
                entries.extend_table(self._pictures_under(folder, folder_real, folder.name,
                                                          split_name))
        for path, reason, _is_folder in refused:
            self._skip(path, "", reason)
        for name in loose:
            self._skip(root / name, "", f"{name} is not inside a split folder")
        return _Found("split-folders", entries, self.skipped, self.ignored,
                      {name: folder for folder, name in splits.items()})

    def _pictures_under(self, top: Path, top_real: Path, label: str,
                        split: str | None = None) -> ImageTable:
        """Picture files anywhere under a class folder, in natural order of their subpath,
        as a table (each with `label` and `split`)."""
        found, inside, stack = ImageTable(), [], [(top, top_real)]
        while stack:  # not recursion: a deep tree must not hit Python's recursion limit
            folder, real = stack.pop()
            folders, files, refused = self._list(folder, real)
            for path, reason, _ in refused:
                self._skip(path, top.name, reason)
            stack += folders
            if len(files):
                number = found.folder_number(_folder_text(folder))
                inside.append(_folder_text(folder.relative_to(top)) if folder != top else "")
                for name in files:
                    found.append_in(number, name, label, split)
        if len(inside) < 2:  # one folder: _list's order already is the natural one
            return found
        return found.take(natural_order(_SubPaths(found, inside)))

    def _list(self, folder: Path, real: Path):
        """(sub-folders as (path, real path), picture files as a StringTable of names,
        refused as (path, reason, folder?)) directly in `folder`, hidden entries left out,
        each in natural order. Plain files (nearly all of a dataset) are kept as names only,
        sorted at the end by compact.natural_order: no object per file."""
        names, listed_at, others = StringTable(), array("I"), []
        try:
            with os.scandir(folder) as listing:
                for place, item in enumerate(listing):
                    if _hidden_name(item.name):
                        self.ignored += not item.is_dir()
                    elif item.is_symlink() or not item.is_file(follow_symlinks=False):
                        others.append((place, item))  # folders and links: a few, checked below
                    elif _is_picture_name(item.name):
                        names.append(item.name)
                        listed_at.append(place)
                    else:  # .txt, .csv: counted only
                        self.ignored += 1
        except OSError as exc:
            reason = f"{folder.name} cannot be read ({exc.strerror or exc})"
            return [], StringTable(), [(folder, reason, True)]
        others.sort(key=lambda placed: natural_key(placed[1].name))
        folders, refused, plain = [], [], len(names)
        for place, item in others:
            path = Path(item.path)
            target, kind, why_not = self._target(item, real / item.name)
            if why_not and (kind == "folder" or _is_picture_name(item.name)):
                refused.append((path, f"{item.name} {why_not}", kind == "folder"))
            elif kind == "file" and not why_not and _is_picture_name(item.name):
                names.append(item.name)
                listed_at.append(place)
            elif kind != "folder" or why_not:  # .txt, .csv, links to them: counted only
                self.ignored += 1
            elif target not in self.read_folders:
                self.read_folders.add(target)
                folders.append((path, target))
            elif item.is_symlink():  # a plain folder cannot be met twice; a link can
                refused.append((path, f"{item.name} links to a folder already read", True))
        if len(names) > plain:  # links to pictures: back into the listing's order first,
            names = names.take(np.argsort(listed_at, kind="stable"))  # which breaks ties
        return folders, names.take(natural_order(names)), refused

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


class _SubPaths(Sequence):
    """The paths of a table's files below a class folder ("sub/img2.jpg"), made on access:
    `inside[n]` is the table's folder n below the class folder."""

    def __init__(self, table: ImageTable, inside: list[str]):
        self.table, self.inside = table, inside

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> str:
        return self.inside[self.table.folder_of(index)] + self.table.name(index)


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


def _check_all(paths: Iterable[str], count: int, prints: FingerprintStore, workers: int | None,
               progress: Callable[[int, int], None] | None) -> dict[int, str]:
    """{place: the reason it is skipped} of the files that are not usable (of `count` files in
    `paths`); the usable files' fingerprints go to `prints` in order as they come (the decode
    that checks a file fingerprints it too: see bench/duplicates.py for the cost), so no list
    of them is ever held, nor of the paths (taken from the iterator a few chunks ahead)."""
    workers = workers or os.cpu_count() or 1
    reasons: dict[int, str] = {}
    done = 0

    def keep(result: tuple) -> None:
        nonlocal done
        reason, fingerprint = result
        if reason is None:
            prints.add(fingerprint)
        else:
            reasons[done] = reason
        done += 1

    if workers == 1 or count < 500:  # starting worker processes costs ~1 s
        for path in paths:
            keep(check_and_fingerprint(path))
            if progress and (done % 50 == 0 or done == count):
                progress(done, count)
        return reasons
    # "fork" where there is one: a spawned child re-imports the parent's __main__, which inside
    # Streamlit is the app script itself. The children only run Pillow, never TensorFlow, so
    # TensorFlow's threads in the parent do not matter to them.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    chunk = max(16, min(256, count // (workers * 8)))
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for results in _map_ahead(pool, _check_chunk, _chunks(paths, chunk), 4 * workers):
            for result in results:
                keep(result)
                if progress and (done % 200 == 0 or done == count):
                    progress(done, count)
    return reasons


def _check_chunk(paths: list[str]) -> list[tuple]:
    return [check_and_fingerprint(path) for path in paths]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _map_ahead(pool: ProcessPoolExecutor, function: Callable, items: Iterable,
               ahead: int) -> Iterator:
    """pool.map's results in order, with at most `ahead` items submitted and not yet taken:
    Executor.map submits every item at once (Python 3.11), which holds them all."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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
    images = ImageTable.of(report.images)
    labels = images.label_codes(report.classes)
    taken, places = array("q"), array("B")  # the rows: each image's place, each split's
    for number, name in enumerate(report.classes):
        entries = array("q")
        entries.frombytes(byte_view(np.flatnonzero(labels == number)))
        wanted = split_counts(len(entries), request)
        _check_enough(name, len(entries), wanted, request)
        if not request.preset:  # shuffles places as it shuffled the entries: the same order
            random.Random(f"{request.seed}:{name}").shuffle(entries)
        start = 0
        for split_number, count in enumerate(wanted):
            part = entries[start:start + count]
            taken += part
            places += array("B", bytes([split_number])) * len(part)
            start += count
    return _manifest(report, images, taken, places, request)


def _manifest(report: ScanReport, images: ImageTable, taken: array, places: array,
              request: SplitRequest) -> Manifest:
    """The manifest of the images at `taken`, each in the split SPLITS[places[k]]; its classes
    those of the report that have a row."""
    rows = images.take(taken, kind=RowTable, splits=(SPLITS, places), shared_names=True)
    present = set(rows.present_labels())
    classes = [name for name in report.classes if name in present]
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
    images = ImageTable.of(report.images)
    labels, splits = images.label_codes(report.classes), images.split_codes(SPLITS)
    taken, places = array("q"), array("B")
    for number, name in enumerate(report.classes):
        entries = np.flatnonzero(labels == number)  # by place, not path: no string per photo
        by_split = {s: entries[splits[entries] == n].tolist() for n, s in enumerate(SPLITS)}
        if len(entries) and not by_split["train"]:
            raise NotEnoughImagesError(
                f"Class {name!r} has no usable images in the training folder "
                f"({given['train']}/), so no model can learn it. Add some, remove the class "
                "from every split folder, or choose fractions to split all its images.")
        for split_name, chosen in zip(held_out, _hold_out(name, by_split, held_out, request)):
            by_split[split_name] = chosen
        for split_number, split_name in enumerate(SPLITS):
            taken += array("q", by_split[split_name])
            places += array("B", bytes([split_number])) * len(by_split[split_name])
    return _manifest(report, images, taken, places, request)


def _hold_out(name: str, by_split: dict[str, list[int]], held_out: list[str],
              request: SplitRequest) -> list[list[int]]:
    """`request.holdout` of a class's training files (their places in the scan) for each
    split in `held_out` (shuffled with the seed); by_split["train"] keeps the rest, in file
    order."""
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
    rows: Sequence[tuple[str, str, str]]  # (path, label, split): a RowTable, or a list
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
        rows = RowTable.of(self.rows)
        chosen = np.flatnonzero(rows.split_codes([split_name]) == 0)
        labels = rows.label_codes(self.classes)[chosen]
        if (labels < 0).any():  # as a dict lookup of the label would
            raise KeyError(rows[int(chosen[np.argmax(labels < 0)])][1])
        return [rows.path(i) for i in chosen.tolist()], labels.tolist()

    def counts(self) -> dict[str, dict[str, int]]:
        counter = _pair_counts(RowTable.of(self.rows), list(SPLITS), self.classes)
        return {s: {name: int(counter[i, k]) for k, name in enumerate(self.classes)}
                for i, s in enumerate(SPLITS)}

    def fingerprint(self) -> str:
        """Changes whenever a file, label or split changes: the SHA-256 of
        json.dumps([classes, rows]), its text made and hashed a slice of rows at a time."""
        digest = hashlib.sha256(f"[{json.dumps(self.classes)}, [".encode())
        for start in range(0, len(self.rows), _ROWS_AT_ONCE):
            rows = self.rows[start:start + _ROWS_AT_ONCE]
            digest.update(((", " if start else "")
                           + ", ".join(_row_json(row) for row in rows)).encode())
        digest.update(b"]]")
        return digest.hexdigest()[:16]

    def to_dict(self, rows: bool = True) -> dict:
        """The manifest as saved (with an empty "files" when not `rows`)."""
        files = ([{"path": p, "label": label, "split": s} for p, label, s in self.rows]
                 if rows else [])
        return {"format": 1, "root": self.root, "classes": self.classes, "request": self.request,
                "counts": self.counts(), "files": files, "dropped": self.dropped}

    def save(self, workspace: str | Path, name: str | None = None) -> Path:
        """Write the manifest into the workspace's manifests folder (atomically), the bytes
        of `write_json_atomic(path, self.to_dict())`, a slice of rows at a time."""
        name = name or (f"{Path(self.root).name}-{_request_slug(self.request)}-"
                        f"{self.fingerprint()[:8]}")
        path = config.manifests_dir(Path(workspace)) / f"{name}.json"
        write_pieces_atomic(path, self._saved_pieces())
        self.path = str(path)
        return path

    def _saved_pieces(self) -> Iterator[bytes]:
        outline = json_bytes(self.to_dict(rows=False)).decode()
        files = outline.index(_FILES) + len(_FILES) - 2  # where "[]" stands
        yield outline[:files].encode()
        if not len(self.rows):
            yield b"[]"
        for start in range(0, len(self.rows), _ROWS_AT_ONCE):
            rows = self.rows[start:start + _ROWS_AT_ONCE]
            yield (("[\n" if not start else ",\n") + ",\n".join(map(_saved_row, rows))
                   + ("\n ]" if start + _ROWS_AT_ONCE >= len(self.rows) else "")).encode()
        yield outline[files + 2:].encode()


# A manifest's rows as `json_bytes` writes them (indent 1, inside the "files" list), and as
# json.dumps writes one for the fingerprint; other values (a number as a label) go through
# json itself.
_FILES = '\n "files": []'
_SAVED_ROW = '  {\n   "path": %s,\n   "label": %s,\n   "split": %s\n  }'
_ROWS_AT_ONCE = 4096


_json_string = json.encoder.encode_basestring_ascii


def _saved_row(row: tuple) -> str:
    if all(isinstance(value, str) for value in row):
        return _SAVED_ROW % tuple(map(_json_string, row))
    path, label, split_name = row
    text = json_bytes({"path": path, "label": label, "split": split_name}).decode()
    return "  " + text.replace("\n", "\n  ")


def _row_json(row: tuple) -> str:
    if all(isinstance(value, str) for value in row):
        return "[" + ", ".join(map(_json_string, row)) + "]"
    return json.dumps(list(row))


def _request_slug(request: dict) -> str:
    if request.get("preset"):
        return request["preset"]
    if request.get("counts"):
        return "counts-" + "-".join(map(str, request["counts"]))
    return "fractions-" + "-".join(f"{f:g}" for f in request["fractions"])


def load_manifest(path: str | Path) -> Manifest:
    """A saved manifest, its rows in a RowTable. The layout `save` writes is read line by
    line (no object per row on the way); any other JSON (older or edited manifests) is read
    whole, as before."""
    path = Path(path)
    try:
        data, rows = _read_saved_layout(path) or _read_any_layout(path)
        manifest = Manifest(data["root"], data["classes"], rows, data.get("request", {}), str(path),
                            _dropped(data.get("dropped", [])))  # older manifests have none
    except FileNotFoundError:
        raise DatasetError(f"No manifest at {path}. Make one with: "
                           "python -m transfer_core split DATA_FOLDER") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a Transfer Lab manifest ({exc}).") from None
    return manifest


def _read_any_layout(path: Path) -> tuple[dict, RowTable]:
    data = json.loads(path.read_text())
    return data, RowTable.of((f["path"], f["label"], f["split"]) for f in data["files"])


def _read_saved_layout(path: Path) -> tuple[dict, RowTable] | None:
    """The manifest's other keys and its rows, read line by line, when the file has exactly
    the layout `Manifest.save` writes (each row on five lines, every value a string); None
    for any other layout."""
    rows, head = RowTable(), []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            head.append(line)
            if line == ' "files": [\n':
                break
        else:
            return None
        while (line := lines.readline()) == "  {\n":
            row = [_saved_value(lines.readline(), key, end) for key, end in _ROW_LINES]
            if None in row or lines.readline() not in ("  },\n", "  }\n"):
                return None
            rows.append(*row)
        if line not in (" ],\n", " ]\n"):
            return None
        head[-1] = ' "files": []' + line[2:]
        data = json.loads("".join(head) + lines.read())
    return data, rows


_ROW_LINES = (('   "path": ', ",\n"), ('   "label": ', ",\n"), ('   "split": ', "\n"))


def _saved_value(line: str, key: str, end: str) -> str | None:
    """The string after `key` on a line of the saved layout; None when the line is other."""
    if not (line.startswith(key) and line.endswith(end)) or line[len(key)] != '"':
        return None
    text = line[len(key):len(line) - len(end)]
    try:
        value, stop = json.decoder.scanstring(text, 1)
    except ValueError:
        return None
    return value if stop == len(text) else None


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
    return _hidden_name(path.name)


def _hidden_name(name: str) -> bool:
    return name.startswith((".", "__MACOSX"))


def _is_picture_name(name: str) -> bool:
    """A name we decode (its content decides) or one of a picture format we list as skipped."""
    dot = name.rfind(".")
    suffix = name[dot:].lower() if 0 < dot < len(name) - 1 else ""  # as Path.suffix
    return suffix in IMAGE_EXTENSIONS or suffix in OTHER_IMAGE_EXTENSIONS


def _kaggle_label(name: str) -> str:
    return name.split(".", 1)[0].lower()


def _folder_text(folder: str | Path) -> str:
    """A folder's path ending with a separator: what its files' paths start with."""
    return os.path.join(str(folder), "")
