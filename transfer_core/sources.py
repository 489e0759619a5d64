"""Where a dataset comes from: a synthetic demo set, an uploaded zip, or a download.

Each function leaves either a complete folder or nothing (work happens in a hidden sibling that is
renamed into place), so a crash, a closed tab or a second click never leaves half a dataset.
Unpacking is bounded (per archive, by the datasets quota and by the free disk space), and an
upload whose bytes were unpacked before reuses that folder.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from collections.abc import Callable
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import numpy as np
from PIL import Image, ImageDraw

from . import config
from .errors import ArchiveError, DatasetError, DownloadError, NoRoomError, TransferLabError
from .images import IMAGE_EXTENSIONS
from .storage import bytes_under, free_path, human_size

# Microsoft's copy of the Kaggle "Dogs vs. Cats" images used in Deep Learning with Python, 5.2;
# it unpacks to PetImages/Cat/*.jpg and PetImages/Dog/*.jpg (about 1,600 files are corrupt).
DOGS_VS_CATS_URL = ("https://download.microsoft.com/download/3/E/1/"
                    "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip")
DOGS_VS_CATS_CLASSES = ("Cat", "Dog")

Progress = Callable[[int, "int | None"], None]

# ---------------------------------------------------------------------------------------------
# The demo set


@dataclass(frozen=True)
class _Palette:
    """The colours of one demo class: sky top→horizon, ground horizon→bottom, shapes."""

    sky: tuple[tuple[int, int, int], tuple[int, int, int]]
    ground: tuple[tuple[int, int, int], tuple[int, int, int]]
    shapes: tuple[tuple[int, int, int], ...]


# The classes differ mostly in colour on purpose: a frozen, randomly initialised conv base keeps
# colour statistics, so even without ImageNet weights a small dense head learns the demo quickly.
DEMO_PALETTES = {
    "sunsets": _Palette(sky=((120, 25, 60), (255, 150, 40)), ground=((130, 45, 15), (45, 12, 5)),
                        shapes=((255, 225, 70), (255, 100, 25), (210, 45, 30))),
    "forests": _Palette(sky=((175, 215, 150), (115, 180, 90)), ground=((45, 125, 35), (15, 60, 15)),
                        shapes=((20, 90, 25), (65, 150, 40), (95, 175, 60))),
    "oceans": _Palette(sky=((60, 120, 220), (170, 210, 250)), ground=((20, 100, 190), (5, 40, 110)),
                       shapes=((225, 240, 255), (40, 140, 220), (10, 70, 160))),
}
DEMO_MARKER = ".transfer_lab_demo.json"
_DEMO_VERSION = 1  # bump when the drawing changes, so old sets are redrawn


def make_demo_dataset(dest: Path, per_class: int = 60, size: int = 96, seed: int = 0,
                      classes=("sunsets", "forests", "oceans")) -> Path:
    """Draw a small synthetic image set (one sub-folder per class) into `dest`; return `dest`.

    It needs no network, so a classroom can tour the whole app in a minute. The pictures are
    seeded (the same arguments give byte-identical JPEGs) and a marker written last makes a second
    call with the same arguments return at once.
    """
    dest = Path(dest)
    classes = _check_demo_args(per_class, size, seed, classes)
    settings = {"version": _DEMO_VERSION, "per_class": per_class, "size": size, "seed": seed,
                "classes": list(classes)}
    if _demo_is_complete(dest, settings):
        return dest
    _check_replaceable_demo(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for index, name in enumerate(classes):
            _draw_demo_class(staging / name, name, index, settings)
        (staging / DEMO_MARKER).write_text(json.dumps(settings, indent=1))
        if dest.exists():
            shutil.rmtree(dest)  # an older demo set (checked above), drawn with other arguments
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _check_demo_args(per_class, size, seed, classes) -> tuple[str, ...]:
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer of at least 16 (pixels), got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    classes = tuple(classes)
    unknown = [name for name in classes if name not in DEMO_PALETTES]
    if len(classes) < 2 or unknown or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be two or more different names from "
                         f"{', '.join(DEMO_PALETTES)}; got {classes!r}")
    return classes


def _demo_is_complete(dest: Path, settings: dict) -> bool:
    try:
        written = json.loads((dest / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return written == settings and all(
        (dest / name / _demo_file_name(name, i)).is_file()
        for name in settings["classes"] for i in range(settings["per_class"]))


def _check_replaceable_demo(dest: Path) -> None:
    """Only an empty folder or an earlier demo set may be replaced: never the user's files."""
    if dest.exists() and not (dest / DEMO_MARKER).exists() and (
            not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{dest} already holds other files; choose an empty or new folder "
                           "for the demo set.")


def _draw_demo_class(folder: Path, name: str, class_index: int, settings: dict) -> None:
    folder.mkdir()
    for i in range(settings["per_class"]):
        # One generator per picture: each image depends only on (seed, class, index).
        rng = np.random.default_rng([settings["seed"], class_index, i])
        image = _demo_image(DEMO_PALETTES[name], settings["size"], rng)
        image.save(folder / _demo_file_name(name, i), format="JPEG", quality=90)


def _demo_file_name(name: str, index: int) -> str:
    return f"{name}_{index:03d}.jpg"


def _demo_image(palette: _Palette, size: int, rng: np.random.Generator) -> Image.Image:
    """A little landscape: gradient sky over gradient ground, a few shapes, sensor-like noise."""
    horizon = int(size * rng.uniform(0.35, 0.7))
    sky = _gradient(_jitter(palette.sky[0], rng), _jitter(palette.sky[1], rng), horizon, size)
    ground = _gradient(_jitter(palette.ground[0], rng), _jitter(palette.ground[1], rng),
                       size - horizon, size)
    image = Image.fromarray(np.concatenate([sky, ground]).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        _draw_shape(draw, palette, size, rng)
    noisy = np.asarray(image, dtype=float) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _jitter(colour, rng: np.random.Generator, spread: float = 14) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=float) + rng.normal(0, spread, 3), 0, 255)


def _gradient(top: np.ndarray, bottom: np.ndarray, rows: int, width: int) -> np.ndarray:
    weights = np.linspace(0.0, 1.0, rows)[:, None, None]
    column = (1 - weights) * top + weights * bottom
    return np.broadcast_to(column, (rows, width, 3))


def _draw_shape(draw: ImageDraw.ImageDraw, palette: _Palette, size: int,
                rng: np.random.Generator) -> None:
    colour = tuple(int(c) for c in _jitter(palette.shapes[rng.integers(len(palette.shapes))], rng))
    x, y = rng.uniform(0, size, 2)
    radius = rng.uniform(size * 0.05, size * 0.2)
    if rng.random() < 0.5:
        draw.ellipse([x - radius, y - radius * rng.uniform(0.4, 1), x + radius, y + radius],
                     fill=colour)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)],
                     fill=colour)


# ---------------------------------------------------------------------------------------------
# Zip archives


_DRIVE = re.compile(r"^[A-Za-z]:")
UPLOAD_MARKER = ".transfer_lab_upload.json"
_LONGEST_FOLDER_NAME = 50  # characters; even 4-byte ones stay under the usual 255-byte limit


def unpack_upload(source: BinaryIO | str | Path, workspace: Path,
                  check: Callable[[Path], object] | None = None) -> Path:
    """Unpack an uploaded zip into the workspace's datasets/ folder; return its image folder.

    The folder is named after the upload, made safe so that it stays inside datasets/; the
    unpacking is bounded by the datasets quota and the free disk space (see `extract_zip`); an
    upload with the same bytes (sha256) as an earlier complete one reuses that folder instead of
    writing a second copy. `check(folder)`, e.g. the dataset scan, runs on the result: when it
    raises one of our errors, the folder is removed and the error passes on. So an upload that
    ends in an error leaves nothing behind.
    """
    root = config.datasets_dir(Path(workspace))
    name = _describe(source)
    digest = _sha256(source, name)
    folder = _unpacked_before(root, digest)
    if folder is None:
        dest = free_path(root / upload_folder_name(name))
        folder = extract_zip(source, dest, quota=config.datasets_quota(),
                             marker={"sha256": digest, "upload": name})
    if check is not None:
        try:
            check(folder)
        except TransferLabError as exc:
            shutil.rmtree(root / folder.relative_to(root).parts[0], ignore_errors=True)
            raise type(exc)(f"{exc} Nothing of {name} was kept: fix the archive and upload "
                            "it again.") from exc
    return folder


def upload_folder_name(upload_name: str) -> str:
    """A folder name for an upload: its file name without ".zip", in safe characters only.

    Whatever name the browser sends ("../x.zip", "..zip", ".zip", a NUL, 10,000 characters),
    the result is one plain name: letters, digits, "_", "-" and spaces, no dot, no separator,
    at most 50 characters; "upload" when nothing is left.
    """
    base = re.split(r"[/\\]", upload_name)[-1]
    if base.lower().endswith(".zip"):
        base = base[:-len(".zip")]
    safe = re.sub(r"[^\w\- ]+", "_", base)  # \w: letters and digits of any script, and "_"
    return safe.strip(" _-")[:_LONGEST_FOLDER_NAME].strip(" _-") or "upload"


def _sha256(source, name: str) -> str:
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as file:
                return hashlib.file_digest(file, "sha256").hexdigest()
        source.seek(0)
        digest = hashlib.file_digest(source, "sha256").hexdigest()
        source.seek(0)
        return digest
    except OSError as error:
        raise ArchiveError(f"Could not read {name}: {error.strerror or error}.") from error


def _unpacked_before(root: Path, digest: str) -> Path | None:
    """The image folder of a complete earlier unpacking of the same bytes, if there is one."""
    for folder in sorted(root.iterdir()):
        if folder.name.startswith("."):
            continue  # a staging folder: never renamed into place, so never finished
        try:
            marker = json.loads((folder / UPLOAD_MARKER).read_text())
        except (OSError, ValueError):
            continue  # not an upload (a download, the demo set) or a damaged marker
        if isinstance(marker, dict) and marker.get("sha256") == digest:
            found = folder / str(marker.get("folder", "."))
            if found.resolve().is_relative_to(folder.resolve()) and found.is_dir():
                return found
    return None


def extract_zip(source: str | Path | BinaryIO, dest: Path, max_files: int = 50_000,
                max_bytes: int = 4 * 2**30, quota: int | None = None,
                marker: dict | None = None) -> Path:
    """Unpack a zip (a path or a seekable binary file such as Streamlit's upload) into `dest`.

    Every entry is checked before anything is written: paths that would land outside `dest`
    ("Zip Slip", https://security.snyk.io/research/zip-slip-vulnerability), symbolic links, a zip
    holding only other zips, and archives that declare more than `max_files` files or
    `max_bytes` bytes are refused. The declared size must also fit in the free disk space less
    `config.FREE_SPACE_MARGIN` and, with a `quota`, in what `dest`'s parent folder may still
    hold (the quota less what it holds already). Bytes are counted again while unpacking and it
    stops at the tightest of these bounds, in case the sizes lie. `__MACOSX/` and dotfiles are
    skipped. `marker` (a dict) is written as JSON to `dest/UPLOAD_MARKER` after the last file,
    so only a complete folder carries it. Returns the single top-level folder when there is one
    (`cats_dogs.zip` → `dest/cats_dogs`), else `dest`.
    """
    dest = Path(dest)
    name = _describe(source)
    if not isinstance(max_files, int) or max_files < 1:
        raise ValueError(f"max_files must be a positive integer, got {max_files!r}")
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise ArchiveError(f"{dest} already exists; delete it or choose another folder name "
                           f"before unpacking {name}.")
    with _open_zip(source, name) as archive:
        members = _plan_members(archive, name, max_files)
        dest.parent.mkdir(parents=True, exist_ok=True)
        declared = sum(info.file_size for info, _ in members if not info.is_dir())
        limit = _byte_limit(name, declared, dest.parent, max_bytes, quota)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial",
                                        dir=dest.parent))
        try:
            _unpack(archive, members, staging, name, limit)
            top = _single_top_folder(staging, [path for _, path in members])
            _move_into_place(staging, dest, top, marker, name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest / top.relative_to(staging)


@dataclass(frozen=True)
class _Limit:
    """The most bytes an archive may unpack to, which bound that is (for the message), and
    the error to raise when the bytes go past it."""

    size: int
    bound: str
    error: type[ArchiveError]


def _byte_limit(name: str, declared: int, folder: Path, max_bytes: int,
                quota: int | None) -> _Limit:
    """The tightest bound on the unpacked bytes; NoRoomError when `declared` exceeds one."""
    if declared > max_bytes:
        raise ArchiveError(f"{name} unpacks to {human_size(declared)}, more than the limit of "
                           f"{human_size(max_bytes)} per archive; use a smaller archive or raise "
                           "the limit.")
    limits = [_Limit(max_bytes, f"the limit of {human_size(max_bytes)} per archive",
                     ArchiveError)]
    where = f"Delete uploads you no longer need from {folder}"
    if quota is not None:
        used = bytes_under(folder)
        left = max(quota - used, 0)
        if declared > left:
            raise NoRoomError(
                f"{name} unpacks to {human_size(declared)}, but the datasets folder {folder} "
                f"already holds {human_size(used)} of its {human_size(quota)} quota "
                f"({human_size(left)} left); nothing was unpacked. {where}, or raise "
                "TRANSFER_LAB_DATASETS_QUOTA.")
        limits.append(_Limit(left, f"the {human_size(left)} left in the datasets quota",
                             NoRoomError))
    free = shutil.disk_usage(folder).free
    spare = max(free - config.FREE_SPACE_MARGIN, 0)
    if declared > spare:
        raise NoRoomError(
            f"{name} unpacks to {human_size(declared)}, but the disk holding {folder} has "
            f"{human_size(free)} free and {human_size(config.FREE_SPACE_MARGIN)} must stay free "
            f"for training; nothing was unpacked. {where} or other files on that disk, or use "
            "a workspace on a larger disk (TRANSFER_LAB_WORKSPACE).")
    limits.append(_Limit(spare, f"the {human_size(spare)} the disk can spare", NoRoomError))
    return min(limits, key=lambda limit: limit.size)


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "the uploaded file"


def _open_zip(source, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except FileNotFoundError as error:
        raise ArchiveError(f"{name} does not exist; check the path.") from error
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise ArchiveError(f"{name} is not a valid zip archive ({error}). Download it again or "
                           "re-create it with a zip tool.") from error
    except OSError as error:
        raise ArchiveError(f"Could not read {name}: {error.strerror or error}.") from error


def _plan_members(archive: zipfile.ZipFile, name: str,
                  max_files: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The entries to unpack with their relative paths; raises before anything is written."""
    members = []
    for info in archive.infolist():
        path = _safe_path(info, name)
        if not path.parts or path.parts[0] == "__MACOSX" or any(
                part.startswith(".") for part in path.parts):
            continue
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{name} is password-protected ({info.filename!r}); unzip it and "
                               "zip it again without a password.")
        members.append((info, path))
    files = [info for info, _ in members if not info.is_dir()]
    if not files:
        raise ArchiveError(f"{name} contains no files (only folders, dotfiles or __MACOSX); "
                           "zip the image folders themselves.")
    if len(files) > max_files:
        raise ArchiveError(f"{name} holds {len(files):,} files, more than the limit of "
                           f"{max_files:,}; split it into smaller archives or raise the limit.")
    _refuse_zips_without_images(name, [path for info, path in members if not info.is_dir()])
    return members


def _refuse_zips_without_images(name: str, files: list[PurePosixPath]) -> None:
    """A zip of zips unpacks to no images: name the inner archive so the user can open it."""
    inner = [str(path) for path in files if path.suffix.lower() == ".zip"]
    if inner and not any(path.suffix.lower() in IMAGE_EXTENSIONS for path in files):
        others = f" (and {len(inner) - 1} more)" if len(inner) > 1 else ""
        raise ArchiveError(f"{name} holds another zip, {inner[0]}{others}, and no images: "
                           "unpack it and upload that, or zip the image folders themselves.")


def _safe_path(info: zipfile.ZipInfo, name: str) -> PurePosixPath:
    """The entry's path inside the destination; ArchiveError if it could escape it."""
    entry = info.filename.replace("\\", "/")  # zips made on Windows sometimes use backslashes
    parts = [part for part in entry.split("/") if part not in ("", ".")]
    if entry.startswith("/") or _DRIVE.match(entry) or ".." in parts:
        raise ArchiveError(f"{name} contains the entry {info.filename!r}, which would be written "
                           "outside the destination folder; nothing was unpacked. Re-create the "
                           "archive with relative paths only.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{name} contains the symbolic link {info.filename!r}; nothing was "
                           "unpacked. Zip the files themselves instead of links to them.")
    return PurePosixPath(*parts)


def _unpack(archive: zipfile.ZipFile, members, staging: Path, name: str, limit: _Limit) -> None:
    written = 0
    for info, path in members:
        target = staging.joinpath(*path.parts)
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as entry, open(target, "wb") as out:
                while chunk := entry.read(1 << 20):
                    written += len(chunk)
                    if written > limit.size:
                        raise limit.error(f"{name} unpacks to more than its header says, more "
                                          f"than {limit.bound}; nothing was unpacked.")
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise ArchiveError(f"{name} is not a valid zip archive: {info.filename!r} is damaged "
                               f"({error}). Download it again or re-create it.") from error
        except NotImplementedError as error:
            raise ArchiveError(f"{name} uses a compression we cannot read ({error}); "
                               "re-create it with ordinary (deflate) compression.") from error
        except OSError as error:
            raise _unpack_failure(name, info.filename, staging.parent, error) from error


def _move_into_place(staging: Path, dest: Path, top: Path, marker: dict | None,
                     name: str) -> None:
    try:
        if marker is not None:  # last, so that only a complete folder carries it
            (staging / UPLOAD_MARKER).write_text(json.dumps(
                {**marker, "folder": top.relative_to(staging).as_posix()}, indent=1))
        if dest.exists():
            dest.rmdir()  # empty, checked before unpacking
        staging.rename(dest)
    except OSError as error:
        raise _unpack_failure(name, str(dest), dest.parent, error) from error


def _unpack_failure(name: str, entry: str, folder: Path, error: OSError) -> ArchiveError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoRoomError(f"The disk filled up while unpacking {name} ({entry!r}); nothing was "
                           f"kept. Delete uploads you no longer need from {folder} or other "
                           "files on that disk, or use a workspace on a larger disk.")
    return ArchiveError(f"Could not unpack {entry!r} from {name}: {error.strerror or error}; "
                        "nothing was kept.")


def _single_top_folder(dest: Path, paths: list[PurePosixPath]) -> Path:
    tops = {path.parts[0] for path in paths}
    if len(tops) == 1 and (dest / next(iter(tops))).is_dir():
        return dest / tops.pop()
    return dest


# ---------------------------------------------------------------------------------------------
# Downloads


# What a flaky network raises: refused or reset connections, timeouts, a response cut short.
_NETWORK_ERRORS = (URLError, http.client.HTTPException, ConnectionError, TimeoutError)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-\d+/(\d+|\*)")


def download(url: str, dest: Path, progress: Progress | None = None, chunk_size: int = 1 << 20,
             timeout: float = 30) -> Path:
    """Fetch `url` into `dest`, resuming an interrupted earlier attempt; return `dest`.

    Bytes go to `dest` + ".part", which is kept on failure; the next call asks the server for
    the rest with an HTTP Range request (RFC 9110, section 14) and starts over when the server
    sends the whole file instead. `progress(done_bytes, total_bytes_or_None)` is called as bytes
    arrive. `dest` appears only once complete, so an existing `dest` is returned as is.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"Could not download {url!r}: only http:// and https:// addresses "
                            "are supported. Check the address.")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        _fetch(url, part, progress, chunk_size, timeout)
    except HTTPError as error:
        raise DownloadError(f"Could not download {url}: the server answered HTTP {error.code} "
                            f"({error.reason}). Check the address, or try again later.") from error
    except _NETWORK_ERRORS as error:
        raise DownloadError(f"Could not download {url}: {_reason(error)}. Check the internet "
                            "connection and try again; the partial file is kept and the "
                            "download resumes.") from error
    except OSError as error:
        raise DownloadError(f"Could not save the download to {part}: {error.strerror or error}. "
                            "Free some disk space or choose another workspace.") from error
    part.replace(dest)
    return dest


def _fetch(url: str, part: Path, progress: Progress | None, chunk_size: int,
           timeout: float) -> None:
    """Fill `part` up to the server's length; raises if the connection ends early."""
    have = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as error:
        if error.code != 416 or not have:
            raise
        # 416: we asked for bytes past the end. Either .part is already whole (we stopped just
        # before renaming it) or the file on the server changed; then start over.
        if _range_total(error.headers) != have:
            part.unlink()
            _fetch(url, part, progress, chunk_size, timeout)
        return
    with response:
        start, total = _start_and_total(response, have)
        if start > have:  # it would leave a hole in the file; never seen from a real server
            raise http.client.HTTPException(
                f"the server resumed at byte {start:,} instead of {have:,}; delete {part}")
        done = _copy(response, part, start, total, progress, chunk_size)
    if total is not None and done != total:
        raise ConnectionError(f"the connection closed after {done:,} of {total:,} bytes")


def _start_and_total(response, have: int) -> tuple[int, int | None]:
    """Where the body goes in the file and the file's full length (None when unknown)."""
    length = response.headers.get("Content-Length")
    if response.status != 206:  # a 200 carries the whole file, whatever we asked for
        return 0, int(length) if length else None
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    start = int(match.group(1)) if match else have
    if match and match.group(2) != "*":
        return start, int(match.group(2))
    return start, start + int(length) if length else None


def _range_total(headers) -> int | None:
    match = re.match(r"bytes\s+\*/(\d+)", headers.get("Content-Range", "") if headers else "")
    return int(match.group(1)) if match else None


def _copy(response, part: Path, start: int, total: int | None, progress: Progress | None,
          chunk_size: int) -> int:
    with open(part, "r+b" if part.exists() else "wb") as out:
        out.seek(start)
        out.truncate()
        done = start
        if progress:
            progress(done, total)
        while chunk := response.read(chunk_size):
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return done


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason) or type(error).__name__


# ---------------------------------------------------------------------------------------------
# Dogs vs. Cats


def prepare_dogs_vs_cats(workspace: Path, progress: Progress | None = None,
                         url: str = DOGS_VS_CATS_URL) -> Path:
    """Download and unpack the chapter's Dogs vs. Cats images; return the folder of Cat/ and Dog/.

    The ~800 MB zip goes into the workspace's datasets folder, resumes if interrupted, and is
    deleted once unpacked (the folder is what later steps read). A second call finds the folder
    and returns at once. Corrupt images are left for the dataset scan to report.
    """
    root = config.datasets_dir(Path(workspace))
    folder = root / "dogs_vs_cats"
    if folder.is_dir() and (found := _folder_holding(folder, DOGS_VS_CATS_CLASSES)):
        return found
    archive = root / (PurePosixPath(urlsplit(url).path).name or "dogs_vs_cats.zip")
    download(url, archive, progress=progress)
    if not zipfile.is_zipfile(archive):
        # Likely an error or log-in page sent with status 200; a kept copy would be reused forever.
        archive.unlink()
        raise DownloadError(f"What {url} sent is not a zip archive (perhaps a web page from a "
                            "proxy or log-in portal); it was deleted. Check the address and the "
                            "connection, then try again.")
    try:
        extract_zip(archive, folder, quota=config.datasets_quota())
    except NoRoomError:
        raise  # the download is sound: kept, so that a retry after freeing space reuses it
    except ArchiveError as exc:
        # A damaged download would be reused by every retry: delete it so the next try fetches.
        archive.unlink(missing_ok=True)
        raise ArchiveError(f"{exc} The damaged download was deleted; try again to fetch it "
                           "afresh.") from None
    found = _folder_holding(folder, DOGS_VS_CATS_CLASSES)
    if found is None:
        raise DatasetError(f"The archive from {url} has no Cat/ and Dog/ folders. Check the "
                           f"address, then delete {folder} and {archive} and try again.")
    archive.unlink()
    return found


def _folder_holding(root: Path, names: tuple[str, ...]) -> Path | None:
    """`root` or a folder up to two levels below it that has every one of `names` as sub-folders."""
    candidates = [root, *sorted(p for p in root.glob("*") if p.is_dir()),
                  *sorted(p for p in root.glob("*/*") if p.is_dir())]
    return next((c for c in candidates if all((c / n).is_dir() for n in names)), None)
