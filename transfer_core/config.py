"""Where Transfer Lab keeps its files, from environment variables (a CLI flag overrides).

TRANSFER_LAB_WORKSPACE       manifests, feature cache, runs (default ./workspace)
TRANSFER_LAB_DATA            the data folder the app offers first (default: none)
TRANSFER_LAB_ROOTS           folders (os.pathsep-separated) under which the app may open server
                             folders; default: the data folder and the workspace only
TRANSFER_LAB_DATASETS_QUOTA  the most the workspace's datasets/ folder (unpacked uploads and
                             downloads) may hold: bytes, or a number with K, M, G or T (powers
                             of 1024), e.g. "500M" or "1.5G"; default 20G. An archive that would
                             take it over the quota is refused before anything is unpacked.
KERAS_HOME                   Keras' own: where downloaded weights are cached
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import DatasetError

DEFAULT_DATASETS_QUOTA = "20G"
# Unpacking never leaves less than this free on the disk: training still needs room for the
# feature cache, the view bank and model files.
FREE_SPACE_MARGIN = 512 * 2**20
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE)


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
    """Whether `path`, links resolved, is one of `roots` or inside one; False for a path the
    file system cannot take (a NUL byte, too long, a link loop), as nothing can be read there."""
    try:
        path = Path(path).expanduser().resolve()
    except (ValueError, OSError, RuntimeError):  # RuntimeError: "~nobody" or a link loop
        return False
    return any(path == root or path.is_relative_to(root) for root in roots)


def folder_path(text: str) -> Path:
    """The folder a user typed, as an absolute path with links resolved.

    Raises DatasetError, naming the fault, for a string no file system takes: a NUL byte, a
    path or a folder name longer than the system allows. Whether it exists is not checked.
    """
    if "\0" in text:
        raise DatasetError("The path contains a NUL byte (\\0), which no file name can hold; "
                           "type the path again.")
    longest_name, longest_path = path_limits()
    length = len(os.fsencode(text))
    if length >= longest_path:
        raise DatasetError(f"The path is {length:,} bytes long; this system takes at most "
                           f"{longest_path - 1:,}. Check what was pasted into the field.")
    name = max(Path(text).parts, key=lambda part: len(os.fsencode(part)), default="")
    if len(os.fsencode(name)) > longest_name:
        raise DatasetError(f"The path has a name of {len(os.fsencode(name)):,} bytes "
                           f"({name[:20]}…); this system takes at most {longest_name} per name. "
                           "Check what was pasted into the field.")
    try:
        return Path(text).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as error:
        reason = str(error).rstrip(".")
        raise DatasetError(f"Cannot use the path {text[:200]!r}: {reason}.") from None


def path_limits() -> tuple[int, int]:
    """The longest file name and path (with its final NUL), in bytes, this system takes."""
    try:
        return os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows): POSIX's usual limits
        return 255, 4096


def datasets_quota() -> int:
    """The most bytes the workspace's datasets/ folder may hold (TRANSFER_LAB_DATASETS_QUOTA)."""
    value = os.environ.get("TRANSFER_LAB_DATASETS_QUOTA") or DEFAULT_DATASETS_QUOTA
    return parse_size(value, "TRANSFER_LAB_DATASETS_QUOTA")


def parse_size(text: str, name: str) -> int:
    """Bytes from "123", "500M", "1.5G", "2 GiB" (K, M, G, T are powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise DatasetError(f"`{name}` must be a positive size in bytes or with a unit K, M, G "
                           f"or T, such as 500M or 20G. Received: {name}={text!r}")
    unit = "_KMGT".index(match.group(2).upper() or "_")
    return int(float(match.group(1)) * 1024**unit)


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
