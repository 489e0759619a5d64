"""Decoding one image file into RGB pixels, the same way for checking, training and predicting.

Only the formats we document are decoded (JPEG incl. CMYK, PNG incl. 16-bit, BMP, GIF, WebP),
chosen by the file's content and never by its name, so no file reaches Pillow's other plugins
or an external decoder (Ghostscript for EPS). EXIF orientation is applied; grayscale, 16-bit,
palette, CMYK and RGBA become 8-bit RGB. A picture over the pixel limit is refused before it is
decoded, and JPEG decodes at a reduced scale when only a small copy is wanted (draft mode).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

# Pillow's format ids we decode, with the names we show.
READ_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP", "GIF": "GIF", "WEBP": "WebP"}
FORMATS_TEXT = ", ".join(READ_FORMATS.values())
# The formats Pillow can decode at a reduced scale (Image.draft): a small copy of one differs
# from the full picture resized.
DRAFT_FORMATS = ("JPEG", "MPO")
# Names worth decoding; what is in them decides whether they are read.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp"}

_CONVERT = "convert it to JPEG or PNG first"
_RAW = ("a camera raw file", "export it as JPEG from your photo software first")
# Picture files we do not read: listed as skipped with what they are and what to do.
OTHER_IMAGE_EXTENSIONS = {
    **dict.fromkeys([".heic", ".heif", ".hif"], (
        "a HEIC photo", "convert it to JPEG first (an iPhone saves JPEG with Settings › "
                        "Camera › Formats › Most Compatible)")),
    ".avif": ("an AVIF image", _CONVERT),
    **dict.fromkeys([".svg", ".svgz"], ("an SVG drawing", "render it to PNG first")),
    **dict.fromkeys([".tif", ".tiff"], ("a TIFF image", _CONVERT)),
    **dict.fromkeys([".raw", ".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".orf", ".rw2",
                     ".raf", ".pef", ".srw"], _RAW),
    ".psd": ("a Photoshop document", _CONVERT),
    ".xcf": ("a GIMP document", _CONVERT),
    ".jxl": ("a JPEG XL image", _CONVERT),
    **dict.fromkeys([".jp2", ".j2k", ".jpf", ".jpx"], ("a JPEG 2000 image", _CONVERT)),
    **dict.fromkeys([".ico", ".cur", ".icns"], ("an icon file", _CONVERT)),
    **dict.fromkeys([".pcx", ".tga", ".sgi", ".dds", ".ppm", ".pgm", ".pbm", ".pnm", ".qoi"],
                    ("an image in a format we do not read", _CONVERT)),
    **dict.fromkeys([".eps", ".ps", ".ai"], ("a PostScript drawing", "render it to PNG first")),
    **dict.fromkeys([".exr", ".hdr"], ("a high-dynamic-range image", _CONVERT)),
}

# Phones take 12-50 Mpx photos; the largest "50 Mpx" sensors give 8,192×6,144 = 50.3 Mpx.
# 52 Mpx keeps those and bounds memory: the check decodes at most 4 bytes per pixel (RGBA,
# 208 MB), the RGB conversion adds 3 (156 MB). Pillow's own bomb warning starts at 89 Mpx.
DEFAULT_MAX_MEGAPIXELS = 52
MAX_PIXELS_ENV = "TRANSFER_LAB_MAX_MEGAPIXELS"


def max_pixels() -> int:
    """The pixel limit: TRANSFER_LAB_MAX_MEGAPIXELS (a number of megapixels) or the default."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_MEGAPIXELS * 1_000_000
    try:
        megapixels = float(value)
    except ValueError:
        megapixels = 0.0
    if not 0 < megapixels < 10_000:
        raise ImageError(f"{MAX_PIXELS_ENV} must be a number of megapixels, e.g. "
                         f"{DEFAULT_MAX_MEGAPIXELS}. Received: {value!r}")
    return int(megapixels * 1_000_000)


def open_rgb(source: str | Path | bytes, max_pixels: int | None = None,
             name: str | None = None, size: tuple[int, int] | None = None,
             max_side: int | None = None) -> Image.Image:
    """Fully decode `source` (a path or the file's bytes) to an upright 8-bit RGB image.

    `size` = (height, width) resizes to exactly that (bilinear); `max_side` shrinks so that the
    longer side is at most that, keeping the aspect ratio (for display). Either lets a JPEG
    decode at 1/2, 1/4 or 1/8 scale. Raises ImageError with a reason a person understands;
    OSError when the file cannot be opened at all.
    """
    target = max(size) if size else max_side
    image = _decode(source, name, max_pixels, draft_side=target)
    image = _to_rgb(image)
    if size is not None:
        image = resized(image, size)
    elif max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.BILINEAR)
    return image


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at exactly `size` = (height, width), bilinear, as every model input is made."""
    return image if image.size == (size[1], size[0]) else image.resize((size[1], size[0]),
                                                                        Image.BILINEAR)


def load_array(source: str | Path | bytes, size: tuple[int, int] | None = None,
               name: str | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3), resized to `size` = (height, width) with bilinear filtering."""
    return np.asarray(open_rgb(source, name=name, size=size), dtype=np.uint8)


def photo_and_array(source: str | Path | bytes, size: tuple[int, int],
                    name: str | None = None) -> tuple[Image.Image, np.ndarray]:
    """The upright RGB photo at full size (to show) and `load_array(source, size)`, from one
    decode: only a JPEG decodes differently when a small copy is wanted (draft mode), so only a
    JPEG is decoded a second time, at its reduced scale (cheap)."""
    image = _decode(source, name, None, draft_side=None)
    photo = _to_rgb(image)
    if image.format in DRAFT_FORMATS:
        return photo, load_array(source, size, name=name)
    return photo, np.asarray(resized(photo, size), dtype=np.uint8)


def check_image(path: str | Path) -> str | None:
    """None for a usable image, else the reason it is skipped.

    Decodes every pixel at full size (only that proves a file is not truncated), but does not
    convert it: the check costs the decoded picture and nothing more.
    """
    try:
        _decode(path, None, None, draft_side=None)
    except ImageError as exc:
        return str(exc)
    except OSError as exc:  # unreadable file (permissions, vanished)
        return f"{Path(path).name} cannot be read ({exc.strerror or exc})"
    return None


def decode_checked(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """The full decode `check_image` makes, returning the picture in Pillow's own mode (no RGB
    copy) for a caller that looks at the pixels too. Raises ImageError or OSError."""
    return _decode(source, name, None, draft_side=None)


def _decode(source: str | Path | bytes, name: str | None, limit: int | None,
            draft_side: int | None) -> Image.Image:
    """The decoded, upright picture in Pillow's own mode, from one of READ_FORMATS only."""
    is_bytes = isinstance(source, (bytes, bytearray))
    name = name or ("the upload" if is_bytes else Path(source).name)
    limit = limit or max_pixels()
    with (io.BytesIO(source) if is_bytes else open(source, "rb")) as stream:
        if not stream.seek(0, io.SEEK_END):
            raise ImageError(f"{name} is empty (zero bytes)")
        stream.seek(0)
        try:
            return _decode_stream(stream, name, limit, draft_side)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name} is too large in pixels to be a photo") from None
        except Image.UnidentifiedImageError:
            raise ImageError(_not_read_reason(stream, name)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{name} is truncated or corrupt ({exc})") from None


def _decode_stream(stream: BinaryIO, name: str, limit: int,
                   draft_side: int | None) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(stream, formats=list(READ_FORMATS))
        width, height = image.size
        if width * height > limit:  # refused from the header, before any pixel is decoded
            raise ImageError(
                f"{name} is too large ({width}×{height} = {width * height / 1e6:.1f} "
                f"megapixels; the limit is {limit / 1e6:g}, set {MAX_PIXELS_ENV} to change it)")
        image.seek(0)  # a GIF's first frame
        if draft_side and image.format in DRAFT_FORMATS:
            # Decode at the smallest 1/2^k scale still at least draft_side on each side.
            image.draft("RGB", (draft_side, draft_side))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
    return image


def _not_read_reason(stream: BinaryIO, name: str) -> str:
    """Why a file that none of READ_FORMATS accepts is skipped, and what to do about it."""
    suffix = Path(name).suffix.lower()
    if suffix in OTHER_IMAGE_EXTENSIONS:  # the name is more telling for camera raw (TIFF inside)
        kind, how = OTHER_IMAGE_EXTENSIONS[suffix]
        return f"{name} is {kind}, a format we do not read; {how} (we read {FORMATS_TEXT})"
    found = _identify(stream)
    if found:
        return (f"{name} is in {found} format; the formats we read are {FORMATS_TEXT}: "
                f"{_CONVERT}")
    return f"{name} is not an image (or not a format we read: {FORMATS_TEXT})"


def _identify(stream: BinaryIO) -> str | None:
    """The format of a file we do not read, from its header only: nothing is decoded, so no
    plugin's loader (Ghostscript for EPS) ever runs."""
    stream.seek(0)
    head = stream.read(4096)
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis",
                                                b"hevx", b"mif1", b"msf1"):
        return "HEIC"
    if b"<svg" in head:
        return "SVG"
    if head.startswith(b"%PDF"):
        return "PDF"
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(stream).format  # Image.open reads headers; load() is never called
    except Exception:  # noqa: BLE001 — any plugin's header parser may fail in its own way
        return None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16-bit grayscale PNG: I;16, I;16B, or I
        image = _sixteen_to_eight(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as a viewer shows them, instead of black.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)  # the alpha band, without another full-size copy
        return background
    return image.convert("RGB")


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16-bit values at 255 (a 16-bit photo turns white); keep the
    # high byte instead, as Pillow itself does for 16-bit RGB PNGs.
    values = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    return Image.fromarray((values >> 8).astype(np.uint8))
