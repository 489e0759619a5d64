"""A dataset made class by class from single photos (uploads, a camera), kept on the server.

Each dataset is an ordinary one-folder-per-class dataset under the workspace
(`datasets/own/<name>/<class>/<hash>.jpg`), written photo by photo as it arrives, so a reload,
a second tab or a later day finds it as it was, and the scanner reads it like any other folder.
Every photo is checked by the same full decode as a scan (images.py) before it is kept; its
file name is its content's hash, so two photos can never overwrite each other and the same
photo sent twice is kept once. Names are sanitised and never reused: creating a dataset whose
name exists is refused (a second student who picks the same name is told to choose another),
never merged into the first one's photos.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable

from . import config
from .datasets import natural_key
from .errors import DatasetError, ImageError, NoRoomError, TransferLabError
from .images import decode_checked
from .storage import bytes_under, human_size, write_bytes_atomic, write_failure

# The file name a photo is kept under ends in its real format's usual suffix.
SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif",
            "WEBP": ".webp"}
MAX_NAME = 60
# Under this many photos per class, a test split holds one or two of them (see few_photos).
FEW_PHOTOS = 10
_UNSAFE = re.compile(r"[^\w \-]+")


def own_root(workspace: Path) -> Path:
    """The folder that holds every made dataset."""
    root = config.datasets_dir(Path(workspace)) / "own"
    root.mkdir(parents=True, exist_ok=True)
    return root


def clean_name(text: str, what: str = "name") -> str:
    """`text` as a folder name: letters (any script), digits, spaces, - and _; nothing that
    could hide it (a leading dot) or lead elsewhere (/, ..). DatasetError when nothing is left."""
    text = unicodedata.normalize("NFC", str(text))
    name = " ".join(_UNSAFE.sub("-", text).split()).strip(" -_")[:MAX_NAME].strip(" -_")
    if not name:
        raise DatasetError(f"Type a {what} with letters or digits. Received: {text!r}")
    return name


def list_datasets(workspace: Path) -> list[str]:
    """The names of the made datasets, in natural order."""
    root = own_root(workspace)
    return sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=natural_key)


def create(workspace: Path, text: str) -> OwnDataset:
    """A new, empty dataset. A name in use (in any case) is refused, so two people who pick
    the same name never share one dataset by accident."""
    name = clean_name(text, "dataset name")
    root = own_root(workspace)
    taken = {existing.casefold() for existing in list_datasets(workspace)}
    try:
        if name.casefold() in taken:
            raise FileExistsError
        os.mkdir(root / name)  # fails if another session made it a moment ago
    except FileExistsError:
        raise DatasetError(f"There is already a dataset named {name!r}: open it from the list, "
                           "or choose another name for a new one.") from None
    return OwnDataset(root / name)


def delete_dataset(workspace: Path, name: str) -> int:
    """Remove a made dataset and its photos; how many photos went. Splits saved from it and
    runs trained on it stay: their models still predict, but evaluating needs the photos."""
    dataset = open_dataset(workspace, name)
    count = sum(dataset.counts().values())
    shutil.rmtree(dataset.folder)
    return count


def open_dataset(workspace: Path, name: str) -> OwnDataset:
    folder = own_root(workspace) / clean_name(name, "dataset name")
    if not folder.is_dir():
        raise DatasetError(f"There is no dataset named {name!r} (any more); choose one from "
                           "the list or make a new one.")
    return OwnDataset(folder)


@dataclass
class Arrival:
    """What became of one photo sent to a class: kept, already there, or refused and why."""

    name: str  # the name it was sent under
    kept: Path | None
    message: str


class OwnDataset:
    """One made dataset: its class folders and their photos, read from disk every time (another
    tab may have changed them)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.name = self.folder.name

    def classes(self) -> list[str]:
        if not self.folder.is_dir():
            raise DatasetError(f"The dataset {self.name!r} was deleted; make or open another.")
        return sorted((p.name for p in self.folder.iterdir()
                       if p.is_dir() and not p.name.startswith(".")), key=natural_key)

    def photos(self, label: str) -> list[Path]:
        """A class's photos, oldest first (the order they were added)."""
        folder = self._class_folder(label)
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def counts(self) -> dict[str, int]:
        return {label: len(self.photos(label)) for label in self.classes()}

    def add_class(self, text: str) -> str:
        label = clean_name(text, "class name")
        self._refuse_taken(label)
        try:
            os.mkdir(self.folder / label)
        except FileExistsError:
            raise DatasetError(f"There is already a class {label!r}.") from None
        return label

    def rename_class(self, label: str, text: str) -> str:
        new = clean_name(text, "class name")
        folder = self._class_folder(label)
        if new == label:
            return label
        self._refuse_taken(new, unless=label)
        # os.rename onto an existing empty folder would succeed: check above, and let a
        # folder another tab made meanwhile fail here (not empty) or in the check.
        try:
            os.rename(folder, self.folder / new)
        except OSError as exc:
            raise DatasetError(f"Cannot rename {label!r} to {new!r} ({exc.strerror}).") from None
        return new

    def delete_class(self, label: str) -> int:
        """Remove a class and its photos; how many photos went."""
        count = len(self.photos(label))
        shutil.rmtree(self._class_folder(label))
        return count

    def remove_photo(self, label: str, file_name: str) -> None:
        path = self._class_folder(label) / Path(file_name).name
        path.unlink(missing_ok=True)  # already gone (another tab): nothing to do

    def add_photos(self, label: str, photos: Iterable[tuple[str, bytes]],
                   quota: int | None = None) -> list[Arrival]:
        """Check each (name, bytes) by decoding it and keep the usable ones in `label`'s
        folder at once; the datasets quota (TRANSFER_LAB_DATASETS_QUOTA) bounds what is kept."""
        folder = self._class_folder(label)
        quota = config.datasets_quota() if quota is None else quota
        datasets = self.folder.parent.parent
        used = bytes_under(datasets)
        arrivals = []
        for name, data in photos:
            try:
                path, message = self._keep(folder, name, data, (used, quota), datasets)
            except TransferLabError as exc:  # not an image, in another class, no room
                arrivals.append(Arrival(name, None, str(exc)))
                continue
            except OSError as exc:  # a full disk: this photo is not kept, the page carries on
                arrivals.append(Arrival(name, None, f"{name} was not kept: "
                                        + write_failure(exc, folder, "keeping the photo")))
                continue
            used += len(data) if message.startswith("added") else 0
            arrivals.append(Arrival(name, path, message))
        return arrivals

    def _keep(self, folder: Path, name: str, data: bytes, room: tuple[int, int],
              datasets: Path) -> tuple[Path, str]:
        image_format = _checked_format(name, data)
        digest = hashlib.sha256(data).hexdigest()[:20]
        file_name = digest + SUFFIXES[image_format]
        elsewhere = [label for label in self.classes()
                     if (self.folder / label / file_name).exists()]
        if elsewhere and elsewhere != [folder.name]:
            raise DatasetError(f"{name} is already in class {elsewhere[0]!r}: one photo cannot "
                               "be in two classes.")
        if elsewhere:
            return folder / file_name, f"{name} is already in {folder.name} (kept once)"
        used, quota = room
        if used + len(data) > quota:
            raise NoRoomError(f"{name} was not kept: the datasets folder {datasets} holds "
                              f"{_size(used)} of its {_size(quota)} quota. Delete datasets you "
                              "no longer need, or raise TRANSFER_LAB_DATASETS_QUOTA.")
        return write_bytes_atomic(folder / file_name, data), f"added {name}"

    def _class_folder(self, label: str) -> Path:
        folder = self.folder / Path(label).name
        if not folder.is_dir():
            raise DatasetError(f"There is no class {label!r} in {self.name!r} (any more).")
        return folder

    def _refuse_taken(self, label: str, unless: str | None = None) -> None:
        for existing in self.classes():
            if existing.casefold() == label.casefold() and existing != unless:
                raise DatasetError(f"There is already a class {existing!r}; choose another "
                                   "name.")


def _checked_format(name: str, data: bytes) -> str:
    """The format of a photo that decodes in full (the scan's check and messages); ImageError
    with the scan's reason otherwise."""
    try:
        image = decode_checked(data, name=name)
    except OSError as exc:
        raise ImageError(f"{name} cannot be read ({exc})") from None
    image_format = image.format or "PNG"
    if image_format not in SUFFIXES:
        raise ImageError(f"{name} is in {image_format} format, which we do not read")
    return image_format


def _size(n: int) -> str:
    return human_size(n) if n >= 2**20 else f"{n / 1024:.0f} KiB"


def few_photos(counts: dict[str, int], test_counts: dict[str, int]) -> str | None:
    """A warning when a class has fewer than FEW_PHOTOS photos: what it means for the test
    accuracy (each test photo moves it by 100 / test photos points)."""
    small = {label: n for label, n in counts.items() if n < FEW_PHOTOS}
    if not small:
        return None
    tested = sum(test_counts.values())
    names = ", ".join(f"{label} ({n})" for label, n in small.items())
    if not tested:
        return (f"Under {FEW_PHOTOS} photos in {names}: the test split is empty, so there "
                "will be no test accuracy. Add photos.")
    step = 100 / tested
    return (f"Under {FEW_PHOTOS} photos in {names}: the test split holds {tested} photo(s), "
            f"so each one right or wrong moves the test accuracy by {step:.0f} points; the "
            "figure says little. Add photos for a test accuracy worth reading.")
