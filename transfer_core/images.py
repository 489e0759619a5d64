"""Decoding one image file into RGB pixels, the same way for checking, training and predicting.

Pillow reads every format we accept (JPEG incl. CMYK, PNG, BMP, GIF, WebP), applies EXIF
orientation, and converts grayscale, palette, CMYK and RGBA to RGB.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# A bigger picture is more likely a decompression bomb than a photo (Pillow warns at 89 Mpx).
MAX_PIXELS = 64_000_000


def open_rgb(source: str | Path | bytes, max_pixels: int = MAX_PIXELS,
             name: str | None = None) -> Image.Image:
    """Fully decode `source` (a path or the file's bytes) to an upright RGB image.

    Raises ImageError with a reason a person understands.
    """
    name = name or ("the upload" if isinstance(source, (bytes, bytearray)) else Path(source).name)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{name} is empty (zero bytes)")
        stream = io.BytesIO(source)
    else:
        if Path(source).stat().st_size == 0:
            raise ImageError(f"{name} is empty (zero bytes)")
        stream = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"{name} is too large ({width}×{height} pixels; the limit is "
                                 f"{max_pixels // 1_000_000} megapixels)")
            image.seek(0)  # a GIF's first frame
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large in pixels to be a photo") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name} is not an image (or not a format we read: "
                         "JPEG, PNG, BMP, GIF, WebP)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name} is truncated or corrupt ({exc})") from None
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = _to_rgb(image)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels become white, as a viewer shows them, instead of black.
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def load_array(source: str | Path | bytes, size: tuple[int, int] | None = None,
               name: str | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3), resized to `size` = (height, width) with bilinear filtering."""
    image = open_rgb(source, name=name)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def check_image(path: str | Path) -> str | None:
    """None for a usable image, else the reason it is skipped."""
    try:
        open_rgb(path)
    except ImageError as exc:
        return str(exc)
    except OSError as exc:  # unreadable file (permissions, vanished)
        return f"{Path(path).name} cannot be read ({exc.strerror or exc})"
    return None
