"""Load a run's model and classify photos of any size and format, from paths or bytes.

The saved model carries its own resizing and preprocessing; images are decoded by the same
code that checked and fed the training images (Pillow, EXIF orientation applied, RGB).
"""

from __future__ import annotations

import contextlib
import re
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from . import layers  # noqa: F401  (registers the custom layers for safe_mode loading)
from . import ood as out_of_distribution
from .errors import ImageError, RunError, TransferLabError, system_error
from .images import load_array, photo_and_array, resized
from .inputs import inference_batches
from .model_parts import model_parts, pooled_model
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
    return two_columns(model.predict_on_batch(images))


def two_columns(out: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes): a sigmoid's one column becomes two."""
    out = np.asarray(out, "float64")
    return np.concatenate([1.0 - out, out], axis=-1) if out.shape[-1] == 1 else out


class Predictor:
    """A run's model, loaded once, with its class names and input size, and (once fitted) the
    statistics of its "none of these" check (ood.py)."""

    def __init__(self, run: Run, ood: bool = True):
        config = run.config
        self.run = run
        self.classes = config.classes
        self.image_size = config.image_size
        self.backbone, self.strategy = config.backbone, config.strategy
        self.model = load_run_model(run)
        self._parts = model_parts(self.model)
        self._pooled = pooled_model(self._parts)
        self._explainer = None
        self.ood_stats = out_of_distribution.load_stats(run) if ood else None
        self.ood_problem: str | None = None  # why the check is off, when it could not be fitted

    def prepare_ood(self, progress=None) -> None:
        """Fit the "none of these" statistics now if the run has none yet (a pass over the
        training and validation photos, once; saved in the run folder). When that cannot be
        done (the photos are gone), predictions go on without the check and `ood_problem`
        says why."""
        if self.ood_stats is not None:
            return
        try:
            self.ood_stats = out_of_distribution.run_stats(self.run, self.pooled_features,
                                                           progress)
        except (TransferLabError, OSError) as exc:
            self.ood_problem = (f"The 'none of these' check is off for this run: "
                                f"{system_error(exc) if isinstance(exc, OSError) else exc}")

    def pooled_features(self, paths: list[str], progress=None, batch_size: int = 32
                        ) -> np.ndarray:
        """The base's output averaged over space, for image files (what ood.py compares)."""
        rows = []
        for images in inference_batches(paths, self.image_size, batch_size):
            rows.append(np.asarray(self._pooled.predict_on_batch(images.astype("float32"))[1]))
            if progress:
                progress(sum(map(len, rows)), len(paths))
        return np.concatenate(rows).astype("float64")

    def explainer(self):
        """Grad-CAM for this model (explain.py), built on first use."""
        if self._explainer is None:
            from .explain import Explainer

            base = "from_scratch" if self.strategy == "from_scratch" else self.backbone
            self._explainer = Explainer(self.model, base, self.classes)
        return self._explainer

    def predict(self, sources: list[str | Path | bytes | Image.Image | np.ndarray],
                names: list[str] | None = None) -> list[dict]:
        """One result per source: {"label", "confidence", "probabilities": {class: p},
        "out_of_distribution", "ood_score", "ood_threshold"} or {"error": text}.

        A source is a path, a file's bytes, a photo already decoded by `images.open_rgb` (which
        can only be resized: a path or the bytes give training's input), or the input
        `photo_and_input` made of one (the Predict page decodes each upload once). The good
        images go through the model in one batch; a bad one does not stop the rest. Without fitted
        statistics, out_of_distribution and the score are None.
        """
        results, arrays, slots = [], [], []
        for source, name in zip(sources, names or [None] * len(sources)):
            try:
                arrays.append(self.model_input(source, name))
                slots.append(len(results))
                results.append(None)
            except ImageError as exc:
                results.append({"error": str(exc)})
        if arrays:
            probs, scores, flags = self._scored(np.stack(arrays).astype("float32"))
            for slot, row, score, flag in zip(slots, probs, scores, flags):
                best = int(np.argmax(row))
                results[slot] = {"label": self.classes[best], "confidence": float(row[best]),
                                 "probabilities": {c: float(p) for c, p in zip(self.classes, row)},
                                 "out_of_distribution": flag, "ood_score": score,
                                 "ood_threshold": self.ood_stats and self.ood_stats.threshold}
        return results

    def _scored(self, images: np.ndarray):
        """Probabilities, and with fitted statistics the scores and flags, from one pass."""
        if self.ood_stats is None:
            return probabilities(self.model, images), [None] * len(images), [None] * len(images)
        probs, pooled = self._pooled.predict_on_batch(images)
        scores, flags = self.ood_stats.flags(np.asarray(pooled))
        return (two_columns(probs), [float(s) for s in scores],
                [bool(f) for f in flags])

    def photo_and_input(self, source, name: str | None = None) -> tuple[Image.Image, np.ndarray]:
        """The upright RGB photo at full size (to show) and the model's input for it, decoded
        once (a JPEG once more, at training's reduced scale: `images.photo_and_array`)."""
        if isinstance(source, Image.Image):
            return source, self.model_input(source)
        with _readable(source, name):
            return photo_and_array(source, self._size, name=name)

    def model_input(self, source, name: str | None = None) -> np.ndarray:
        """The model's input, decoded as training and Evaluate decoded their photos
        (`images.load_array`: a large JPEG at a reduced scale first), so a photo gets the same
        score here as there. A photo the caller decoded already can only be resized; an input
        `photo_and_input` made is used as it is."""
        if isinstance(source, np.ndarray):
            return source
        if isinstance(source, Image.Image):
            return np.asarray(resized(source, self._size), dtype=np.uint8)
        with _readable(source, name):
            return load_array(source, self._size, name=name)

    @property
    def _size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)


@contextlib.contextmanager
def _readable(source, name: str | None):
    """Turns a missing, unreadable or folder source into an ImageError that names it."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        raise ImageError(f"{name or source} is a folder, not an image")
    try:
        yield
    except FileNotFoundError:
        raise ImageError(f"{name or source} does not exist") from None
    except OSError as exc:  # no permission, a vanished disk
        raise ImageError(f"{name or source} cannot be read ({exc.strerror or exc})") from None
