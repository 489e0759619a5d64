"""Atomic file writes: a reader never sees half a file, a crash never leaves a broken one.
Defensive reads, the one message for a failed write (a full disk above all), the clean-up of
temporary files whose writer is gone, and how big a file is, in words."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import TransferLabError

# Every temporary file or folder we create carries its writer's pid, so that the next start can
# tell a leftover of a killed writer (removed) from the work of a live one (never touched).
# (Before, a model's was ".model-PID.tmp.keras": its pid is read too.)
_WRITER = re.compile(r"(?:\.pid|^\.model-)(\d+)\.")
# Leftovers named before the pid was in the name: removed once they are this old.
_UNNAMED_TEMP_AGE = 24 * 3600


class StorageError(TransferLabError):
    """A write that failed (a full disk, a read-only folder): the message says where and why."""


class DamagedFile(ValueError):
    """A file we wrote that no longer reads as what we wrote (truncated, edited, other format)."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{Path(path).name}: {why}")
        self.path, self.why = Path(path), why


def temp_prefix(name: str) -> str:
    """The start of a temporary name for `name`, with this process's pid in it."""
    return f".{name}.pid{os.getpid()}."


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename over `path`."""
    return write_pieces_atomic(path, [data])


def write_pieces_atomic(path: str | Path, pieces: Iterable[bytes]) -> Path:
    """write_bytes_atomic of the pieces joined, written as they come: a large file (a manifest
    of 100,000 photos) is never whole in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model_atomic(model, path) -> None:
    """Save to a temporary .keras file beside `path`, then rename: never a half-written model.
    A failed save (a full disk) removes its temporary file and raises StorageError."""
    path = Path(path)
    tmp = path.with_name(f"{temp_prefix(path.name)}tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failed_write = os_error_in(exc)
        if failed_write is None:
            raise
        raise StorageError(write_failure(failed_write, path.parent, "saving the model")) from exc


def write_json_atomic(path: str | Path, data) -> Path:
    return write_bytes_atomic(path, json_bytes(data))


def write_json_in_place(path: str | Path, data) -> Path:
    """The last resort on a full disk, when there is no room for a temporary file: rewrite
    `path` in its own blocks. Not atomic, but a reader that meets half a file reads it as
    damaged, which says more than a status that never changes."""
    with open(path, "r+b" if Path(path).exists() else "wb") as handle:
        handle.seek(0)
        handle.write(json_bytes(data))
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def json_bytes(data) -> bytearray:
    """json.dumps(data, indent=1, default=str), encoded, byte for byte, gathered piece by piece:
    with an indent, dumps joins a list of every small piece (several times the text: 8 MB
    for a manifest of 8,000 photos whose text is 0.8 MB), and a str copied into bytes."""
    out = bytearray()
    for piece in json.JSONEncoder(indent=1, default=str).iterencode(data):
        out += piece.encode()
    return out


def read_json(path: str | Path, default=None):
    """The JSON at `path`, or `default` when it does not exist yet. Raises DamagedFile when
    it is not valid JSON (a truncated or edited file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    except UnicodeDecodeError:
        raise DamagedFile(path, "not text") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DamagedFile(path, f"not valid JSON, truncated or edited ({exc})") from None


def read_json_object(path: str | Path, default=None) -> dict | None:
    """read_json for a file that holds one JSON object; anything else raises DamagedFile."""
    data = read_json(path, default)
    if data is not default and not isinstance(data, dict):
        kind = {bool: "true or false", int: "a number", float: "a number", str: "a string",
                list: "a list", type(None): "null"}[type(data)]
        raise DamagedFile(path, f"holds {kind}, not a JSON object")
    return data


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one line; a single write() of a short line lands whole for readers."""
    line = json.dumps(record, default=float) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | Path) -> tuple[list[dict], int]:
    """The JSON objects of a .jsonl file, and how many lines were skipped as damaged (not
    JSON, or JSON that is not an object). An unterminated last line is a line still being
    written: left out, not counted."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    lines = text.split("\n")
    lines.pop()  # "" after the last newline, or the line still being written
    records, skipped = [], 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            skipped += 1
    return records, skipped


# ---- failed writes ---------------------------------------------------------------------------

def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` (itself, or what it was raised from), if any: libraries wrap
    a full disk in their own exceptions."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_failure(exc: OSError, folder: str | Path, doing: str) -> str:
    """One line for a failed write: "no space left on device (3 MB free in /ws/runs/x)" for a
    full disk, else the system's reason and the file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on device ({free_mb(folder)} MB free in {folder}) while "
                f"{doing}: free some space and try again")
    where = exc.filename or folder
    return f"{exc.strerror or exc} ({where}) while {doing}"


def free_mb(folder: str | Path) -> int:
    """Free space of the disk holding `folder` (or its nearest existing parent), in MB."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free // 2**20
    except OSError:
        return 0


# ---- leftovers of killed writers -------------------------------------------------------------

def process_alive(pid) -> bool:
    """Whether process `pid` runs on this machine (a zombie, finished but not yet reaped by
    its parent, does not count)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def temp_writer(name: str) -> int | None:
    """The pid in a temporary file's name, None when it has none."""
    match = _WRITER.search(name)
    return int(match.group(1)) if match else None


def is_temp(name: str, folder: bool = False) -> bool:
    """Whether `name` is one of our temporary files (or, with `folder`, a partial feature
    set's folder): hidden, and named so."""
    if folder:
        return name.startswith(".") and ".partial" in name
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders directly in `folder` whose writer is gone
    (by the pid in their name; an old one without a pid too). Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        folder = entry.is_dir() and not entry.is_symlink()
        if not is_temp(entry.name, folder) or not _stale(entry):
            continue
        if folder:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _stale(entry: Path) -> bool:
    pid = temp_writer(entry.name)
    if pid is not None:
        return not process_alive(pid)
    try:
        return time.time() - entry.lstat().st_mtime > _UNNAMED_TEMP_AGE
    except OSError:
        return False


def free_path(path: str | Path) -> Path:
    """`path` when nothing is there yet, else the first free of path-2, path-3, …"""
    path = candidate = Path(path)
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def human_size(n: int) -> str:
    """Bytes as a person reads them: 1.8 GiB, 139.0 MiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def bytes_under(folder: Path) -> int:
    """What the files under `folder` hold, links not followed (as the datasets quota counts)."""
    total = 0
    for parent, _folders, files in os.walk(folder):
        for file in files:
            try:
                total += os.lstat(os.path.join(parent, file)).st_size
            except OSError:
                continue  # removed meanwhile
    return total
