"""Grad-CAM: where in a photo a run's model found the evidence for a class.

Selvaraju et al., "Grad-CAM" (2017), as keras.io's example does it: the gradient of the class
score with respect to the base's last convolutional feature map, averaged over space, weights
that map's channels; their sum, through a ReLU, is the heatmap, drawn over the photo.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from .errors import ImageError, RunError
from .model_parts import ModelParts, model_parts

# The last convolutional feature map of each base, the one Grad-CAM explains. For VGG16 it is
# block5_conv3, before the last max-pooling, which halves the map to 4×4 at 150 px; for the
# others it is the base's own output (its final activation: the map's full resolution).
GRADCAM_LAYERS = {
    "vgg16": "block5_conv3",
    "mobilenet_v2": "out_relu",
    "efficientnet_b0": "top_activation",
    "resnet50_v2": "post_relu",
    "from_scratch": "conv4",  # the chapter's own convnet (5.2): its last convolution
}

DEFAULT_OPACITY = 0.45


class Explainer:
    """Grad-CAM heatmaps for a run's loaded model (any strategy: they all save one shape)."""

    def __init__(self, model: keras.Model, backbone: str, classes: list[str]):
        if backbone not in GRADCAM_LAYERS:
            raise RunError(f"No Grad-CAM layer is known for the backbone {backbone!r}.")
        self.parts: ModelParts = model_parts(model)
        self.classes = list(classes)
        base = self.parts.base
        # The base up to the explained map, and on from it: both outputs come from one pass.
        self._inner = keras.Model(base.inputs, [base.get_layer(GRADCAM_LAYERS[backbone]).output,
                                                base.output], name="gradcam_base")

    def heatmaps(self, images: np.ndarray, class_index: int | list[int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, classes), heatmaps (N, h, w) in 0..1) for uint8 RGB images.

        `class_index`: the class each heatmap explains, one for all or one per image; None:
        each image's predicted class. An all-zero heatmap means nothing spoke for the class.
        """
        images = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
        with tf.GradientTape() as tape:
            conv, features = self._inner(self.parts.base_input(images), training=False)
            logits = class_logits(self.parts.head, features)
            probs = tf.nn.softmax(logits, axis=-1)
            wanted = _wanted(class_index, probs, len(images))
            score = tf.reduce_sum(tf.gather(logits, wanted, axis=1, batch_dims=1))
        grads = tape.gradient(score, conv)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1)).numpy()
        peak = cams.max(axis=(1, 2), keepdims=True)
        return probs.numpy().astype("float64"), np.where(peak > 0, cams / np.maximum(peak, 1e-12),
                                                         0.0)

    def class_index(self, name: str) -> int:
        if name not in self.classes:
            raise RunError(f"The model knows no class {name!r}; it knows "
                           f"{', '.join(self.classes)}.")
        return self.classes.index(name)


def class_logits(head: keras.Model, features) -> tf.Tensor:
    """One score per class before the output's activation (Grad-CAM explains these: a
    saturated sigmoid or softmax has no gradient left). A sigmoid's one logit z becomes
    (-z/2, z/2), whose softmax is (1 - sigmoid(z), sigmoid(z)): the model's own two numbers."""
    x = features
    for layer in head.layers[:-1]:
        x = layer(x, training=False)
    output = head.layers[-1]
    z = tf.matmul(tf.cast(x, "float32"), tf.cast(output.kernel, "float32")) + output.bias
    return tf.concat([-z / 2, z / 2], axis=-1) if z.shape[-1] == 1 else z


def _wanted(class_index, probs, count: int):
    if class_index is None:
        return tf.argmax(probs, axis=-1, output_type=tf.int32)
    wanted = np.broadcast_to(np.asarray(class_index, dtype="int32"), (count,))
    return tf.constant(wanted)


# --- drawing ---------------------------------------------------------------------------------

# The "jet" colour map's corners (blue → cyan → green → yellow → red), without matplotlib.
_JET = np.array([[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [0.5, 1, 0.5], [1, 1, 0], [1, 0, 0],
                 [0.5, 0, 0]])


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(h, w) values in 0..1 → (h, w, 3) uint8 colours of the jet map."""
    position = np.clip(heatmap, 0, 1) * (len(_JET) - 1)
    low = np.floor(position).astype(int).clip(0, len(_JET) - 2)
    share = (position - low)[..., None]
    return ((_JET[low] * (1 - share) + _JET[low + 1] * share) * 255).round().astype("uint8")


def upsampled(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The heatmap stretched smoothly to (width, height): the model saw the photo stretched to
    a square, so the map's square covers the whole photo."""
    image = Image.fromarray(np.asarray(heatmap, dtype="float32"), mode="F")
    return np.asarray(image.resize(size, Image.BICUBIC)).clip(0, 1)


def overlay(photo: Image.Image, heatmap: np.ndarray, opacity: float = DEFAULT_OPACITY
            ) -> Image.Image:
    """The photo with the heatmap's colours blended over it (0: the photo, 1: the map)."""
    if not 0 <= opacity <= 1:
        raise ValueError(f"`opacity` must be between 0 and 1. Received: opacity={opacity}")
    colours = colorize(upsampled(heatmap, photo.size))
    blended = (1 - opacity) * np.asarray(photo.convert("RGB"), "float32") + opacity * colours
    return Image.fromarray(blended.round().astype("uint8"))


def explain_files(run, paths: list[str], out_dir: str | Path, class_name: str | None = None,
                  predictor=None) -> list[dict]:
    """Grad-CAM overlays of image files as PNGs in `out_dir`, one result per file: the
    predicted class, the explained class and the PNG's path, or {"error": why}."""
    from .predict import Predictor
    from .storage import write_bytes_atomic

    predictor = predictor or Predictor(run, ood=False)
    explainer = predictor.explainer()
    wanted = None if class_name is None else explainer.class_index(class_name)
    out_dir = Path(out_dir)
    results = []
    for index, path in enumerate(paths):
        try:
            photo, array = predictor.photo_and_input(path)
        except ImageError as exc:  # this file only
            results.append({"path": str(path), "error": str(exc)})
            continue
        probs, maps = explainer.heatmaps(array[None], wanted)
        best = int(np.argmax(probs[0]))
        explained = best if wanted is None else wanted
        name = f"{index:03d}-{Path(path).stem}.gradcam-{explainer.classes[explained]}.png"
        target = out_dir / name
        write_bytes_atomic(target, _png(overlay(photo, maps[0])))
        results.append({"path": str(path), "label": explainer.classes[best],
                        "confidence": float(probs[0, best]),
                        "explained_class": explainer.classes[explained],
                        "heatmap": str(target)})
    return results


def gallery_overlays(predictor, paths: list[str], class_names: list[str],
                     max_side: int = 300) -> list[Image.Image | None]:
    """For Evaluate's mistakes: each photo, shrunk to `max_side`, with the heatmap of its
    class in `class_names` (the class it was wrongly given); None for a file gone since."""
    explainer = predictor.explainer()
    found, arrays, wanted = [], [], []
    for path, name in zip(paths, class_names):
        try:
            photo, array = predictor.photo_and_input(path)
        except ImageError:
            found.append(None)
            continue
        photo.thumbnail((max_side, max_side))
        found.append(photo)
        arrays.append(array)
        wanted.append(explainer.class_index(name))
    maps = iter(explainer.heatmaps(np.stack(arrays), wanted)[1] if arrays else [])
    return [None if photo is None else overlay(photo, next(maps)) for photo in found]


def _png(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
