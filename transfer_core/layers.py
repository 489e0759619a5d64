"""Custom layers that saved models contain; registered so `safe_mode=True` loading works."""

from __future__ import annotations

import keras
import numpy as np

from .backbones import PREPROCESS_MODES


@keras.saving.register_keras_serializable(package="transfer_core")
class Preprocess(keras.layers.Layer):
    """A backbone's preprocess_input as a layer, so a saved model carries its preprocessing.

    Input: RGB in 0..255. Modes as keras.applications' imagenet_utils, plus the chapter's
    plain rescale by 1/255.
    """

    _CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR
    _TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"mode must be one of {PREPROCESS_MODES}, not {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            return keras.ops.flip(x, axis=-1) - np.array(self._CAFFE_MEAN, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean, std = np.array(self._TORCH_MEAN, "float32"), np.array(self._TORCH_STD, "float32")
            return (x / 255.0 - mean) / std
        if self.mode == "rescale":
            return x / 255.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
