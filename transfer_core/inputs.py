"""tf.data input pipelines from a manifest's files: parallel decode, RGB, resize, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .images import load_array


def image_dataset(paths: list[str], labels: list[int] | None, image_size: int,
                  batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of (uint8 images (B, size, size, 3), int labels), or images alone without labels.

    Decoding goes through Pillow (the same code that checked the files and that prediction
    uses), in parallel; training order is shuffled with `seed`, evaluation order is kept.
    """
    size = (image_size, image_size)

    def load(path):
        image = tf.numpy_function(lambda p: load_array(p.decode(), size), [path], tf.uint8,
                                  stateful=False)
        image.set_shape((image_size, image_size, 3))
        return image

    data = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=object).astype(str))
    if labels is not None:
        data = tf.data.Dataset.zip(data, tf.data.Dataset.from_tensor_slices(
            np.asarray(labels, dtype="int32")))
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if labels is not None:
        data = data.map(lambda p, y: (load(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
