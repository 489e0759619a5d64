"""Input pipelines from a manifest's files: parallel decode, RGB, resize, batch.

Decoding goes through Pillow (`images.load_array`: the same code that checked the files and
that prediction uses), so a model sees the same pixels in training, evaluation and prediction.
A file deleted or damaged since the split is a user error: one line that names it and says to
split again, before the work starts (`check_split_files`) or when it is met.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from .errors import DatasetError, ImageError
from .images import load_array

# Images decoded together before the model runs on them (CPU only, see `inference_batches`).
CHUNK_IMAGES = 256
SPLIT_AGAIN = "split again (Dataset page or `python -m transfer_core split`)"


def check_split_files(paths: list[str], split: str = "") -> None:
    """Raise DatasetError when files of a split are gone (deleted, moved, a disk unmounted).

    One stat per file (a few milliseconds for thousands), so a run or an evaluation stops
    before it builds a model, with one line instead of tf.data's trace when it meets the gap.
    """
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        which = f"{split} " if split else ""
        raise DatasetError(f"{len(missing)} of the {len(paths)} {which}files of the split are "
                           f"missing, e.g. {missing[0]}: {SPLIT_AGAIN}.")


def read_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """`load_array` for a file of a split: every failure is an ImageError naming the whole path."""
    try:
        return load_array(path, size, name=path)
    except FileNotFoundError:
        raise ImageError(f"{path} is missing") from None
    except OSError as exc:  # permissions, a vanished disk: the file is there but cannot be read
        raise ImageError(f"{path} cannot be read ({exc.strerror or exc})") from None


def changed_file_error(exc: BaseException) -> ImageError | None:
    """For a loop fed by `image_dataset` (model.fit): the one-line error for a file deleted or
    damaged since the split, which tf.data hands over as a long "Graph execution error".
    None when `exc` is something else."""
    reason = _wrapped_reason(exc)
    return None if reason is None else ImageError(
        f"{reason}: the file changed after the split; {SPLIT_AGAIN}.")


def _wrapped_reason(exc: BaseException) -> str | None:
    # The message holds the Python traceback of `read_image`, ending with the ImageError line.
    if not isinstance(exc, tf.errors.OpError):
        return None
    found = re.search(r"ImageError: (.+)", exc.message or "")
    return found.group(1).strip() if found else None


def image_dataset(paths: list[str], labels: list[int] | None, image_size: int,
                  batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of (uint8 images (B, size, size, 3), int labels), or images alone without labels,
    decoded in parallel and prefetched; training order is shuffled with `seed`.

    Raises DatasetError now if files are missing; `changed_file_error` translates a file that
    goes missing or bad later, while the data is read."""
    check_split_files(paths)
    size = (image_size, image_size)

    def load(path):
        image = tf.numpy_function(lambda p: read_image(p.decode(), size), [path], tf.uint8,
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
    the slowest one; decoding a chunk with every core, then running the model on it, was faster
    (docs/BENCHMARKS.md, "Extraction: decode a chunk, then compute"; `bench/probes.py decode`).
    Raises ImageError for a file that is gone or can no longer be decoded: its reason alone,
    the caller says what to do.
    """
    if tf.config.list_physical_devices("GPU"):
        yield from _prefetched(paths, image_size, batch_size)
        return
    size = (image_size, image_size)
    chunk = max(batch_size, CHUNK_IMAGES // batch_size * batch_size)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow decodes without the GIL
        for start in range(0, len(paths), chunk):
            images = np.stack(list(pool.map(lambda p: read_image(p, size),
                                            paths[start:start + chunk])))
            for first in range(0, len(images), batch_size):
                yield images[first:first + batch_size]


def _prefetched(paths, image_size, batch_size):
    try:
        for batch in image_dataset(paths, None, image_size, batch_size):
            yield batch.numpy()
    except tf.errors.OpError as exc:
        reason = _wrapped_reason(exc)  # tf.data wraps read_image's ImageError in a long trace
        if reason is None:
            raise
        raise ImageError(reason) from None
