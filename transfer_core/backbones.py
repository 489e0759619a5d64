"""The registry of pretrained conv bases from keras.applications, and how to build one.

Each entry knows its constructor, its own input preprocessing (and the chapter's plain 1/255
rescale as an option), its default input size, where fine-tuning starts and where its weights
come from (the registry itself imports no TensorFlow). Weights load through Keras' own download
and cache (KERAS_HOME), a local file, or not at all (random initialisation, for tests and
timing).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BackboneError

PREPROCESS_MODES = ("caffe", "tf", "torch", "rescale", "none")


@dataclass(frozen=True)
class Backbone:
    name: str
    label: str
    constructor: str  # attribute of keras.applications
    default_size: int
    preprocess_mode: str  # what the family's preprocess_input does
    fine_tune_from: str  # first layer unfrozen by the fine_tune strategy
    weights_file: str  # Keras' cache file name for ImageNet weights without the top
    summary: str
    # The input size its ImageNet weights were trained at (Keras' applications docs), and
    # the smallest Keras accepts (`min_size` in keras.applications' input-shape check).
    imagenet_size: int = 224
    min_size: int = 32

    def weights_filename(self, image_size: int) -> str:
        return self.weights_file.format(size=_nearest_mobilenet_size(image_size))


BACKBONES = {
    b.name: b for b in [
        Backbone("vgg16", "VGG16", "VGG16", 150, "caffe", "block5_conv1",
                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "The chapter's conv base: 13 plain conv layers, accurate but slow on a CPU."),
        Backbone("mobilenet_v2", "MobileNetV2", "MobileNetV2", 160, "tf", "block_16_expand",
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
                 "Small and fast (about 20× fewer operations than VGG16): the CPU choice."),
        Backbone("efficientnet_b0", "EfficientNetB0", "EfficientNetB0", 224, "none",
                 "block7a_expand_conv", "efficientnetb0_notop.h5",
                 "Accurate for its size; rescales its input itself."),
        Backbone("resnet50_v2", "ResNet50V2", "ResNet50V2", 224, "tf",
                 "conv5_block1_preact_bn",
                 "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "A deep residual network; slower than MobileNetV2, faster than VGG16."),
    ]
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(f"Unknown backbone {name!r}; choose one of "
                            f"{', '.join(BACKBONES)}.") from None


def _nearest_mobilenet_size(size: int) -> int:
    # Keras ships MobileNetV2 weights for these sizes only and uses 224's otherwise.
    return size if size in (96, 128, 160, 192, 224) else 224


# The rule of the size warning: more than this factor away from the weights' training size.
SIZE_FACTOR = 2.0


def trained_size(backbone: Backbone, image_size: int) -> int:
    """The input size the ImageNet weights loaded at `image_size` were trained at: MobileNetV2
    has weights per size (96 to 224) and takes 224's for any other size."""
    if backbone.name == "mobilenet_v2":
        return _nearest_mobilenet_size(image_size)
    return backbone.imagenet_size


def size_advice(name: str, image_size: int) -> tuple[str, str | None]:
    """(what the weights were trained at, a warning when `image_size` is far from it or below
    what Keras accepts, else None). The rule: under 1/SIZE_FACTOR or over SIZE_FACTOR times
    the training size, filters tuned to objects of one scale see them much smaller or larger."""
    backbone = get_backbone(name)
    trained = trained_size(backbone, image_size)
    fact = f"{backbone.label}'s ImageNet weights were trained on {trained}×{trained} photos."
    if image_size < backbone.min_size:
        return fact, (f"{image_size} px is below the {backbone.min_size} px Keras accepts for "
                      f"{backbone.label}; use at least {backbone.min_size}.")
    if not trained / SIZE_FACTOR <= image_size <= trained * SIZE_FACTOR:
        return fact, (f"{image_size} px is more than {SIZE_FACTOR:g}× away from {trained} px: "
                      "the pretrained filters see objects at a scale far from the one they "
                      f"learned, and accuracy usually drops. Stay within {trained / SIZE_FACTOR:g}"
                      f"–{trained * SIZE_FACTOR:g} px unless you measure otherwise.")
    return fact, None


def keras_home() -> Path:
    """The folder Keras downloads into: $KERAS_HOME or ~/.keras, but /tmp/.keras when that is
    not writable, because keras.utils.get_file silently switches there."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    if not os.access(home, os.W_OK):
        return Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    return home


def imagenet_weights_path(backbone: Backbone, image_size: int) -> Path:
    """Where Keras keeps (or will download) the backbone's ImageNet weights without the top."""
    return keras_home() / "models" / backbone.weights_filename(image_size)


def weights_id(backbone: Backbone, weights: str, image_size: int) -> str:
    """A string that changes whenever the weights' values would: for the cache keys."""
    if weights == "none":
        return "none"
    path = (imagenet_weights_path(backbone, image_size) if weights == "imagenet"
            else Path(weights))
    if path.exists():
        stat = path.stat()
        return f"{weights}:{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
    return weights


def build_base(backbone: Backbone | str, weights: str = "imagenet",
               image_size: int | None = None):
    """The conv base without its top, input (size, size, 3) in the family's own scale.

    `weights` is "imagenet", "none", or the path of a weights file.
    """
    backbone = get_backbone(backbone) if isinstance(backbone, str) else backbone
    size = image_size or backbone.default_size
    if size < 32:
        raise BackboneError(f"image size {size} is too small; use at least 32 pixels.")
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise BackboneError(f"There is no weights file {weights}. Use imagenet, none, "
                            "or the path of a .h5 / .weights.h5 file.")
    import keras

    constructor = getattr(keras.applications, backbone.constructor)
    try:
        return constructor(include_top=False, input_shape=(size, size, 3),
                           weights=None if weights == "none" else weights)
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        raise _weights_error(backbone, weights, size, exc) from None


def _weights_error(backbone: Backbone, weights: str, size: int, exc: Exception) -> BackboneError:
    text = str(exc)
    if weights == "imagenet" and ("URL fetch failure" in text or isinstance(exc, OSError)):
        target = imagenet_weights_path(backbone, size)
        return BackboneError(
            f"Could not download the ImageNet weights for {backbone.label} (no network?). "
            f"To work offline, place the file {target.name} at {target} (KERAS_HOME sets the "
            "folder), or choose weights 'none' or a local weights file.")
    return BackboneError(f"Could not load the {weights} weights into {backbone.label}: {text}")


def preprocess_mode(backbone: Backbone, preprocessing: str) -> str:
    """'backbone' → the family's own mode; 'rescale' → the chapter's 1/255."""
    if preprocessing == "backbone":
        return backbone.preprocess_mode
    if preprocessing == "rescale":
        return "rescale"
    raise BackboneError(f"preprocessing must be 'backbone' or 'rescale', not {preprocessing!r}.")


def batchnorm_layers(model) -> list[str]:
    import keras

    return [layer.name for layer in _all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def parameter_count(model) -> int:
    return int(sum(math.prod(w.shape) for w in model.weights))


def flops_per_image(model) -> int:
    """Floating-point operations (2 per multiply-add) of one forward pass, from the layer
    shapes: convolutions and dense layers, which are nearly all of a convnet's arithmetic."""
    import keras

    total = 0
    for layer in _all_layers(model):
        if not hasattr(layer, "output") or hasattr(layer, "layers"):
            continue
        out = layer.output.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * kh * kw * out[1] * out[2] * out[3]
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += 2 * kh * kw * cin * out[1] * out[2] * out[3] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * out[-1]
    return int(total)


def describe(name: str, image_size: int | None = None) -> dict:
    """Size facts for the Train page and the CLI, from a randomly initialised build."""
    backbone = get_backbone(name)
    size = image_size or backbone.default_size
    base = build_base(backbone, "none", size)
    info = {"name": backbone.name, "label": backbone.label, "image_size": size,
            "parameters": parameter_count(base), "flops_per_image": flops_per_image(base),
            "feature_shape": list(base.output.shape[1:]),
            "layers": [layer.name for layer in base.layers],
            "layer_shapes": {layer.name: list(layer.output.shape[1:]) for layer in base.layers},
            "fine_tune_from": backbone.fine_tune_from,
            "batchnorm_layers": len(batchnorm_layers(base)),
            "summary": backbone.summary}
    import keras

    keras.backend.clear_session()
    return info
