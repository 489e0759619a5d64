"""The parts of a run's saved model (strategies.build_full_model): resize → preprocess →
base → head, found by name, so Grad-CAM and the "none of these" check can reach inside it.

Every strategy saves this shape; the base is a nested model (its layers are its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from .errors import RunError


@dataclass
class ModelParts:
    model: keras.Model
    resize: keras.layers.Layer
    preprocess: keras.layers.Layer
    base: keras.Model
    head: keras.Model

    @property
    def image_size(self) -> int:
        return int(self.base.input.shape[1])

    def base_input(self, images):
        """Images (N, any, any, 3) in 0..255 → what the base takes, as the model does it."""
        return self.preprocess(self.resize(keras.ops.cast(images, "float32")))


def model_parts(model: keras.Model) -> ModelParts:
    """The parts of a saved run model; RunError when it is not of that shape (a model that a
    different version of this program, or another program, saved)."""
    nested = [layer for layer in model.layers
              if isinstance(layer, keras.Model) and layer.name != "head"]
    try:
        return ModelParts(model, model.get_layer("resize"), model.get_layer("preprocess"),
                          nested[0], model.get_layer("head"))
    except (ValueError, IndexError):
        raise RunError(f"The model {model.name!r} is not one this program trained (it has no "
                       "resize, preprocess, base and head parts): train again.") from None


def pooled_model(parts: ModelParts) -> keras.Model:
    """Images → (class probabilities, the base's output averaged over space): one pass serves
    both the prediction and the "none of these" check."""
    inputs = keras.Input((None, None, 3), name="image")
    features = parts.base(parts.base_input(inputs), training=False)
    pooled = keras.layers.GlobalAveragePooling2D(dtype="float32", name="pooled")(features)
    return keras.Model(inputs, [parts.head(features, training=False), pooled],
                       name="probabilities_and_pooled")
