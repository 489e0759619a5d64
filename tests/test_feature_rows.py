"""Cached features read in batches by explicit reads give exactly what the arrays in memory
give, train the same weights, and leave the process's memory flat."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from transfer_core.baseline import pooled as baseline_pooled
from transfer_core.feature_rows import FeatureBatches, RowReader, pooled
from transfer_core.runs import TrainConfig
from transfer_core.strategies import build_head, compile_model
from transfer_core.training import ViewBank


def _saved(tmp_path: Path, array: np.ndarray, name="features.npy") -> np.ndarray:
    """`array` written as the cache writes it, and opened as the cache opens it."""
    np.save(tmp_path / name, array)
    return np.load(tmp_path / name, mmap_mode="r")


@pytest.fixture
def features(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(50, 3, 3, 8)).astype("float32")
    return array, _saved(tmp_path, array)


def test_rows_read_from_the_file_equal_the_array(features):
    array, mapped = features
    reader = RowReader(mapped)
    assert reader.path is not None  # it reads the file, not the map
    rows = np.array([7, 8, 9, 3, 49, 0, 1, 20])  # runs, jumps, both ends
    assert np.array_equal(reader.take(rows), array[rows])
    assert np.array_equal(reader.range(45, 60), array[45:])
    assert np.array_equal(np.concatenate(list(reader.chunks(16))), array)
    assert reader.take(np.array([], int)).shape == (0, 3, 3, 8)


def test_float16_rows_come_back_as_float32(tmp_path, features):
    array = features[0].astype("float16")
    read = RowReader(_saved(tmp_path, array, "half.npy")).take(np.arange(10, 30))
    assert read.dtype == np.float32
    assert np.array_equal(read, array[10:30].astype("float32"))


def test_a_slice_of_a_map_is_indexed_not_read_from_the_file(features):
    array, mapped = features
    reader = RowReader(mapped[10:20])
    assert reader.path is None
    assert np.array_equal(reader.take(np.array([0, 5])), array[[10, 15]])


def test_pooled_in_chunks_equals_pooled_whole(features):
    array, mapped = features
    expected = array.mean(axis=(1, 2))
    assert np.allclose(pooled(mapped, size=7), expected, rtol=0, atol=1e-6)
    assert np.allclose(baseline_pooled(mapped), expected, rtol=0, atol=1e-6)
    flat = array.reshape(50, -1)
    assert np.array_equal(pooled(flat, size=7), flat)


def test_view_bank_batches_from_the_file_equal_those_from_memory(tmp_path):
    images, views = 23, 3
    rng = np.random.default_rng(1)
    array = rng.normal(size=(images * views, 4)).astype("float32")
    labels = rng.integers(0, 2, images)
    in_memory = ViewBank(array, labels, views, batch_size=5, seed=7)
    streamed = ViewBank(_saved(tmp_path, array), labels, views, batch_size=5, seed=7)
    for _epoch in range(views + 1):
        for b in range(len(in_memory)):
            (x1, y1), (x2, y2) = in_memory[b], streamed[b]
            assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
        in_memory.on_epoch_end()
        streamed.on_epoch_end()


def test_validation_batches_cover_the_split_in_order(features):
    array, mapped = features
    labels = np.arange(50)
    batches = FeatureBatches(mapped, labels, batch_size=16)
    assert len(batches) == 4
    assert np.array_equal(np.concatenate([batches[i][0] for i in range(4)]), array)
    assert np.array_equal(np.concatenate([batches[i][1] for i in range(4)]), labels)


def _fitted_head(train, validation, seed=3):
    """The chapter's flatten head fitted 2 epochs as training does; its weights and history."""
    config = TrainConfig(manifest="unused.json", backbone="mobilenet_v2", weights="none",
                         image_size=32, batch_size=8, seed=seed)
    keras.utils.set_random_seed(seed)
    head = build_head((3, 3, 8), 2, config)
    compile_model(head, 2, 1e-3, jit_compile=False)
    history = head.fit(train, validation_data=validation, epochs=2, verbose=0).history
    return [w.copy() for w in head.get_weights()], history


def test_training_on_the_streamed_cache_gives_the_same_weights(tmp_path, features):
    array, mapped = features
    labels = (np.arange(50) % 2).astype("float32")
    val = np.random.default_rng(2).normal(size=(20, 3, 3, 8)).astype("float32")
    val_labels = (np.arange(20) % 2).astype("float32")
    # Before: the validation split as one array in memory, the bank indexing the array.
    before, history_before = _fitted_head(ViewBank(array, labels, 1, 8, seed=4),
                                          (val, val_labels))
    after, history_after = _fitted_head(
        ViewBank(mapped, labels, 1, 8, seed=4),
        FeatureBatches(_saved(tmp_path, val, "val.npy"), val_labels, batch_size=8))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # Validation in batches of 8, not Keras' 32: the same mean up to float rounding.
    assert np.allclose(history_before["val_loss"], history_after["val_loss"], rtol=1e-5)
    assert history_before["val_accuracy"] == history_after["val_accuracy"]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_reading_a_split_leaves_the_process_memory_flat(tmp_path):
    rows, width = 256, 64 * 1024  # 64 MiB of float32
    mapped = _saved(tmp_path, np.ones((rows, width), "float32"))
    reader, start = RowReader(mapped), _rss_mib()
    for first in range(0, rows, 16):
        assert reader.range(first, first + 16).min() == 1.0
    streamed = _rss_mib() - start
    for first in range(0, rows, 16):  # the same batches through the memory map
        assert np.array(mapped[first:first + 16]).min() == 1.0
    through_map = _rss_mib() - start
    assert streamed < 16 and through_map > 48, (streamed, through_map)


def test_the_baseline_fits_on_a_bounded_repeatable_sample():
    from transfer_core.baseline import MAX_TRAIN_PHOTOS, training_sample

    rows = training_sample(5 * MAX_TRAIN_PHOTOS, seed=1)
    assert len(rows) == MAX_TRAIN_PHOTOS == len(np.unique(rows))
    assert np.array_equal(rows, np.sort(rows)) and rows.max() < 5 * MAX_TRAIN_PHOTOS
    assert np.array_equal(rows, training_sample(5 * MAX_TRAIN_PHOTOS, seed=1))
    assert np.array_equal(training_sample(300, seed=1), np.arange(300))  # small: every photo


def test_pooled_rows_are_those_rows_pooled(features):
    array, mapped = features
    rows = np.array([2, 3, 40])
    assert np.allclose(pooled(mapped, size=2, rows=rows), array[rows].mean(axis=(1, 2)),
                       rtol=0, atol=1e-6)
