"""Input pipelines from a manifest's files: parallel decode, RGB, resize, batch.

Decoding goes through Pillow (`images.load_array`: the same code that checked the files and
that prediction uses), so a model sees the same pixels in training, evaluation and prediction.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import tensorflow as tf

from .errors import ImageError
from .images import load_array

# Images decoded together before the model runs on them (CPU only, see `inference_batches`).
CHUNK_IMAGES = 256


def image_dataset(paths: list[str], labels: list[int] | None, image_size: int,
                  batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of (uint8 images (B, size, size, 3), int labels), or images alone without labels,
    decoded in parallel and prefetched; training order is shuffled with `seed`."""
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


def inference_batches(paths: list[str], image_size: int, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 batches (B, size, size, 3) of `paths` in order, for a model that only predicts.

    With a GPU, tf.data decodes on the CPU while the GPU computes. Without one, decoding beside
    the model's convolutions steals a core from their threads and the whole operation waits for
    the slowest one; decoding a chunk with every core, then running the model on it, was faster:
    MobileNetV2 at 160 px on 2 cores went from 77 to 88 images/s (`bench/probes.py decode`).
    Raises ImageError for a file that can no longer be decoded.
    """
    if tf.config.list_physical_devices("GPU"):
        yield from _prefetched(paths, image_size, batch_size)
        return
    size = (image_size, image_size)
    chunk = max(batch_size, CHUNK_IMAGES // batch_size * batch_size)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow decodes without the GIL
        for start in range(0, len(paths), chunk):
            images = np.stack(list(pool.map(lambda p: load_array(p, size),
                                            paths[start:start + chunk])))
            for first in range(0, len(images), batch_size):
                yield images[first:first + batch_size]


def _prefetched(paths, image_size, batch_size):
    try:
        for batch in image_dataset(paths, None, image_size, batch_size):
            yield batch.numpy()
    except tf.errors.OpError as exc:
        # tf.data wraps load_array's ImageError in a long trace: give back its message.
        reason = re.search(r"ImageError: (.+)", exc.message or "")
        if reason is None:
            raise
        raise ImageError(reason.group(1).strip()) from None
