"""Batches for a model that only predicts: the pixels `load_array` gives, in manifest order,
whether decoded chunk by chunk (the CPU) or through tf.data (a GPU), and a clear error for a
file that no longer decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import transfer_core.inputs as inputs
from conftest import colour_image
from transfer_core.errors import ImageError
from transfer_core.images import load_array


@pytest.fixture
def photos(tmp_path) -> list[str]:
    paths = []
    for i in range(7):
        path = tmp_path / f"photo{i}.png"
        colour_image((30 * i, 200 - 20 * i, 90), size=40, seed=i).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("chunk", [256, 4])  # one chunk, or several with a partial batch each
def test_batches_hold_the_decoded_pixels_in_order(photos, monkeypatch, chunk):
    monkeypatch.setattr(inputs, "CHUNK_IMAGES", chunk)
    batches = list(inputs.inference_batches(photos, 24, 2))
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    expected = np.stack([load_array(p, (24, 24)) for p in photos])
    np.testing.assert_array_equal(np.concatenate(batches), expected)
    assert batches[0].dtype == np.uint8


def test_the_gpu_pipeline_gives_the_same_batches(photos):
    cpu = list(inputs.inference_batches(photos, 24, 3))
    gpu = list(inputs._prefetched(photos, 24, 3))
    assert [len(b) for b in gpu] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(gpu), np.concatenate(cpu))


@pytest.mark.parametrize("batches", [inputs.inference_batches, inputs._prefetched])
def test_a_file_that_no_longer_decodes_is_named(photos, batches):
    Path(photos[5]).write_bytes(b"not a picture any more")
    with pytest.raises(ImageError, match="photo5.png"):
        list(batches(photos, 24, 2))
