"""Rows of a cached feature set read in batches, so memory stays flat in the dataset's size.

The cache is a .npy file opened with np.load(mmap_mode="r"); every page of a memory map that is
read counts in the process's resident memory until the kernel needs it back, so reading a
2.5 GB split through the map, even batch by batch, grows the process to 2.5 GB. These readers
read the file's bytes with os.preadv into arrays of their own instead: the pages stay in the
page cache, not in the process (docs/BENCHMARKS.md, "Memory flat in the dataset's size").
Any stored dtype is read (float32 now, float16 for a smaller bank) and returned as float32.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import keras
import numpy as np

# Rows read at once by the sequential readers: 256 flattened MobileNetV2 rows at 160 px are
# 32 MB as float32, whatever the size of the split.
CHUNK_ROWS = 256


class RowReader:
    """Reads rows of one feature array as float32: by explicit reads from its .npy file when
    it is a memory map of one, by indexing otherwise (an array already in memory)."""

    def __init__(self, features: np.ndarray):
        self.features, self.shape = features, tuple(features.shape)
        self.row_shape = self.shape[1:]
        self.path, self.offset, self.stored = _npy_layout(features)
        self.row_bytes = self.stored.itemsize * math.prod(self.row_shape) if self.path else 0

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at the indices `rows`, in that order (sorted indices read fastest)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.path is None:
            return np.asarray(self.features[rows], dtype="float32")
        raw = np.empty((len(rows), *self.row_shape), self.stored)
        with open(self.path, "rb", buffering=0) as handle:
            for first, last, start in _runs(rows):  # consecutive rows: one read
                _read_exactly(handle.fileno(), raw[first:last],
                              self.offset + start * self.row_bytes)
        return raw.astype("float32", copy=False)

    def range(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1, as float32."""
        stop = min(stop, len(self))
        return self.take(np.arange(start, max(start, stop)))

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """Every row in order, `size` rows at a time."""
        for start in range(0, len(self), size):
            yield self.range(start, start + size)


def pooled(features: np.ndarray, size: int = CHUNK_ROWS, rows: np.ndarray | None = None
           ) -> np.ndarray:
    """(N, h, w, c) → (N, c) float32: the mean over the spatial axes (as global average
    pooling) of every row, or of `rows` only, read `size` rows at a time; (N, c) rows come
    back as they are, as float32."""
    reader = RowReader(features)
    rows = np.arange(len(reader)) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), reader.row_shape[-1]), "float32")
    for start in range(0, len(rows), size):
        chunk = reader.take(rows[start:start + size])
        out[start:start + len(chunk)] = (chunk if chunk.ndim == 2 else
                                         chunk.mean(axis=tuple(range(1, chunk.ndim - 1))))
    return out


class FeatureBatches(keras.utils.PyDataset):
    """(features, labels[, sample weights]) batches of a cached split in order, read as they
    are needed: the validation data of a fit (Keras evaluates it batch by batch all the same)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int,
                 weights: np.ndarray | None = None):
        super().__init__()
        self.reader, self.labels, self.batch_size = RowReader(features), labels, batch_size
        self.weights = weights

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        batch = (self.reader.range(part.start, part.stop), self.labels[part])
        return batch if self.weights is None else (*batch, self.weights[part])


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _npy_layout(features: np.ndarray) -> tuple[str | None, int, np.dtype]:
    """(file, offset of the first row, stored dtype) when `features` maps a whole C-ordered
    .npy file; (None, 0, dtype) otherwise."""
    path = getattr(features, "filename", None)
    if not isinstance(features, np.memmap) or not path:
        return None, 0, features.dtype
    with open(path, "rb") as handle:
        read_header = _HEADER_READERS.get(np.lib.format.read_magic(handle))
        if read_header is None:  # a newer .npy version than this reader knows
            return None, 0, features.dtype
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    if fortran or tuple(shape) != features.shape or dtype != features.dtype:
        return None, 0, features.dtype  # a slice or a view of the file: index it instead
    return path, offset, dtype


def _runs(rows: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(first, last) positions in `rows` of each run of consecutive indices, with its first
    index."""
    if not len(rows):
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(rows)]
    for first, last in zip(starts.tolist(), stops.tolist()):
        yield first, last, int(rows[first])


def _read_exactly(fd: int, out: np.ndarray, offset: int) -> None:
    view = memoryview(out.reshape(-1).view(np.uint8))
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise OSError(f"the feature cache file ended early at byte {offset}")
        view, offset = view[got:], offset + got
