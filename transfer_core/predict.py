"""Load a run's model and classify photos of any size and format, from paths or bytes.

The saved model carries its own resizing and preprocessing; images are decoded by the same
code that checked and fed the training images (Pillow, EXIF orientation applied, RGB).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from . import layers  # noqa: F401  (registers the custom layers for safe_mode loading)
from .errors import ImageError, RunError
from .images import open_rgb
from .precision import cpu_has_bf16, in_float32
from .runs import Run

# What a file that is not a complete, sound .keras archive makes Keras raise on loading.
_DAMAGED = (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError, EOFError,
            zipfile.BadZipFile, zlib.error)


def load_model(path: str | Path) -> keras.Model:
    """The model saved at `path`, loaded with safe_mode (no Python code from the file runs).

    Raises RunError with one of three messages: the file is missing, damaged (not a complete
    .keras archive, or one Keras cannot rebuild), or unsafe (it holds Python code).
    """
    path = Path(path)
    where = f"{path.name} in run {path.parent.name}"
    if not path.is_file():
        raise RunError(f"There is no model at {path}: the run has not finished an epoch yet.")
    if not zipfile.is_zipfile(path):  # Keras calls a truncated archive "File not found"
        raise RunError(f"{where} is damaged or incomplete (not a complete .keras archive, "
                       f"{path.stat().st_size:,} bytes): train again.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except _DAMAGED as exc:
        if "safe_mode" in str(exc):
            raise RunError(f"{where} holds Python code{_code_kind(exc)}, which is never run "
                           "from a file, for safety: train again.") from None
        raise RunError(f"{where} is damaged or incomplete ({_first_line(exc)}): "
                       "train again.") from None


def load_run_model(run: Run) -> keras.Model:
    """The run's kept model; RunError saying why when it has none to use (Run.model_problem:
    still training, failed before a save, cut short) rather than only "no file"."""
    problem = run.model_problem()
    if problem:
        raise RunError(problem)
    model = load_model(run.model_path)
    # A base trained in bfloat16 elsewhere would run slower here than in float32.
    return model if cpu_has_bf16() else in_float32(model)


def _code_kind(exc: Exception) -> str:
    layer = re.search(r"`(\w+)` layer", str(exc))
    return f" (a {layer.group(1)} layer)" if layer else ""


def _first_line(exc: Exception, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities for a batch of RGB images; a sigmoid output becomes two."""
    out = np.asarray(model.predict_on_batch(images), dtype="float64")
    if out.shape[-1] == 1:
        out = np.concatenate([1.0 - out, out], axis=-1)
    return out


class Predictor:
    """A run's model, loaded once, with its class names and input size."""

    def __init__(self, run: Run):
        config = run.config
        self.classes = config.classes
        self.image_size = config.image_size
        self.model = load_run_model(run)

    def predict(self, sources: list[str | Path | bytes | Image.Image],
                names: list[str] | None = None) -> list[dict]:
        """One result per source: {"label", "probabilities": {class: p}} or {"error": text}.

        A source is a path, a file's bytes, or a photo already decoded by `images.open_rgb`
        (the Predict page shows it too: each upload is decoded once). The good images go
        through the model in one batch; a bad one does not stop the rest.
        """
        results, arrays, slots = [], [], []
        for source, name in zip(sources, names or [None] * len(sources)):
            try:
                arrays.append(self._array(source, name))
                slots.append(len(results))
                results.append(None)
            except ImageError as exc:
                results.append({"error": str(exc)})
        if arrays:
            probs = probabilities(self.model, np.stack(arrays).astype("float32"))
            for slot, row in zip(slots, probs):
                best = int(np.argmax(row))
                results[slot] = {"label": self.classes[best], "confidence": float(row[best]),
                                 "probabilities": {c: float(p) for c, p in zip(self.classes, row)}}
        return results

    def _array(self, source, name: str | None) -> np.ndarray:
        """The model's input for one source, resized as `images.load_array` does for training."""
        if isinstance(source, (str, Path)) and Path(source).is_dir():
            raise ImageError(f"{name or source} is a folder, not an image")
        try:
            image = source if isinstance(source, Image.Image) else open_rgb(source, name=name)
        except FileNotFoundError:
            raise ImageError(f"{name or source} does not exist") from None
        except OSError as exc:  # no permission, a vanished disk
            raise ImageError(f"{name or source} cannot be read ({exc.strerror or exc})") from None
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
