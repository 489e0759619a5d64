"""Where TensorFlow runs: the GPU when there is one (memory growth, mixed precision), else the
CPU."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf


@functools.cache
def configure(mixed_precision: bool = True) -> dict:
    """Set up the devices once per process and say what was chosen.

    Mixed float16 halves memory traffic on GPUs with tensor cores; on the CPU it is slower, so
    it is only turned on with a GPU. Output layers are kept float32 by the model builders.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth cannot change any more
            pass
    if gpus and mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return {"device": "GPU" if gpus else "CPU", "gpus": [gpu.name for gpu in gpus],
            "policy": keras.mixed_precision.global_policy().name}
