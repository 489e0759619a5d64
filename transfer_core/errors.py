"""Errors a user can cause, each with a message that says what to do.

The CLI prints them as one line and the app shows them in a box; anything else is a bug.
"""


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
