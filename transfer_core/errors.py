"""Errors a user can cause, each with a message that says what to do.

The CLI prints them as one line and the app shows them in a box; anything else is a bug.
"""

import errno


class TransferLabError(Exception):
    """Base class: a problem with the user's input or environment, not with our code."""


class DatasetError(TransferLabError):
    """A folder, manifest or split request that cannot be used as asked."""


class NotEnoughImagesError(DatasetError):
    """A class has fewer usable images than a split asks for."""


class ArchiveError(TransferLabError):
    """A zip that is corrupt, too large, or tries to write outside its folder."""


class NoRoomError(ArchiveError):
    """An archive that does not fit in the datasets quota or on the disk."""


class DownloadError(TransferLabError):
    """A download that failed (no network, server error, interrupted)."""


class BackboneError(TransferLabError):
    """An unknown backbone, a bad weights file, or weights that cannot be fetched."""


class RunError(TransferLabError):
    """A training run that cannot be started, found, or loaded."""


class ImageError(TransferLabError):
    """A file that is not an image we can decode."""


class PathError(TransferLabError):
    """A path no file system can hold: a NUL byte in it, or longer than the system allows."""


class Stopped(Exception):
    """Raised inside long loops (training, extraction) when the user asked to stop. Not a
    TransferLabError: nothing went wrong and there is nothing to fix; a run that stops keeps
    its best model and ends as "stopped"."""


# What to do about the OSErrors a user can cause or fix; any other: check the path.
_ADVICE = {errno.ENOSPC: "free some space or choose another disk",
           errno.EDQUOT: "free some space or choose another disk",
           errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
           errno.EROFS: "the disk is read-only: choose another folder",
           errno.ENAMETOOLONG: "choose a shorter path"}


def system_error(exc: OSError) -> TransferLabError:
    """An OSError (a full disk, a folder without permission) as one line a person can act on:
    what failed, on which file, and what to do, without an errno number or a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    return TransferLabError(f"{reason}{where}: {_ADVICE.get(exc.errno, 'check the path')}.")
