"""Load a run's model and classify photos of any size and format, from paths or bytes.

The saved model carries its own resizing and preprocessing; images are decoded by the same
code that checked and fed the training images (Pillow, EXIF orientation applied, RGB).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from . import layers  # noqa: F401  (registers the custom layers for safe_mode loading)
from .errors import ImageError, RunError
from .images import load_array
from .runs import Run


def load_model(path: str | Path) -> keras.Model:
    path = Path(path)
    if not path.exists():
        raise RunError(f"There is no model at {path}: the run has not finished an epoch yet.")
    return keras.models.load_model(path, safe_mode=True, compile=False)


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
        self.model = load_model(run.model_path)

    def predict(self, sources: list[str | Path | bytes], names: list[str] | None = None) -> list[dict]:
        """One result per source: {"label", "probabilities": {class: p}} or {"error": text}.

        The good images go through the model in one batch; a bad one does not stop the rest.
        """
        results, arrays, slots = [], [], []
        for source, name in zip(sources, names or [None] * len(sources)):
            try:
                arrays.append(load_array(source, (self.image_size, self.image_size), name))
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
