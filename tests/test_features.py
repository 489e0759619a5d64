"""The feature cache: a second request is instant and never builds a model, any change that
would change the features is a miss, and rows follow the manifest. VGG16 at 32 px, random
weights: about a second per extraction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import transfer_core.features as features_module
from conftest import COLOURS, colour_image
from transfer_core.datasets import Manifest, SplitRequest, scan, split
from transfer_core.errors import DatasetError, ImageError
from transfer_core.features import FeatureCache, FeatureSpec, build_extractor
from transfer_core.images import load_array

SPEC = FeatureSpec("vgg16", "none", 32, seed=1)


@pytest.fixture
def manifest(folder_dataset) -> Manifest:
    """Per class: 2 train, no validation, 1 test (6 train images in all)."""
    return split(scan(folder_dataset), SplitRequest(counts=(2, 0, 1), seed=0))


@pytest.fixture
def cache(workspace) -> FeatureCache:
    return FeatureCache(workspace)


def _extract(cache, manifest, spec=SPEC, **kwargs):
    return cache.extract(manifest, "train", spec, batch_size=4, **kwargs)


def test_a_second_request_is_a_hit_without_building_a_model(cache, manifest, monkeypatch):
    calls = []
    first = _extract(cache, manifest, progress=lambda done, total: calls.append((done, total)))
    paths, labels = manifest.files("train")
    assert not first.hit and first.images_per_second > 0 and first.steady_images_per_second > 0
    assert first.features.shape == (6, 1, 1, 512)
    assert calls == [(4, 6), (6, 6)]

    def no_model(spec):
        raise AssertionError("a cache hit must not build a model")

    monkeypatch.setattr(features_module, "build_extractor", no_model)
    calls.clear()
    second = _extract(cache, manifest, progress=lambda done, total: calls.append((done, total)))
    assert second.hit and second.key == first.key and second.images_per_second is None
    assert second.summary()["cache"] == "hit"
    assert calls[-1] == (6, 6)
    assert isinstance(second.features, np.memmap)
    np.testing.assert_array_equal(second.features, first.features)
    assert list(second.labels) == labels and second.paths == paths

    # What was stored is what the model computes for these images.
    monkeypatch.undo()
    images = np.stack([load_array(p, (32, 32)) for p in paths])
    fresh = build_extractor(SPEC).predict(images, verbose=0)
    np.testing.assert_allclose(second.features, fresh, rtol=1e-4, atol=1e-5)


def test_rewriting_one_image_is_a_miss_that_changes_only_its_row(cache, manifest):
    first = _extract(cache, manifest)
    before = np.array(first.features)
    paths, _ = manifest.files("train")
    colour_image(COLOURS["green"], 32, seed=99).save(paths[2])  # a red image turns green
    second = _extract(cache, manifest)
    assert not second.hit and second.key != first.key
    after = np.array(second.features)
    assert not np.allclose(after[2], before[2])
    np.testing.assert_allclose(np.delete(after, 2, axis=0), np.delete(before, 2, axis=0),
                               rtol=1e-4, atol=1e-5)


class WouldBuildAModel(Exception):
    """Raised instead of building a model: proves a miss without paying for the extraction."""


def test_what_changes_the_features_is_a_miss(cache, manifest, monkeypatch):
    first = _extract(cache, manifest)
    reseeded = _extract(cache, manifest, replace(SPEC, seed=2))
    assert not reseeded.hit and reseeded.key != first.key
    assert not np.allclose(reseeded.features, first.features)  # the seed really matters

    def would_build(spec):
        raise WouldBuildAModel(spec)

    monkeypatch.setattr(features_module, "build_extractor", would_build)
    variants = {"image size": replace(SPEC, image_size=48),
                "backbone": replace(SPEC, backbone="mobilenet_v2"),
                "preprocessing": replace(SPEC, preprocessing="rescale"),
                "weights": replace(SPEC, weights="imagenet")}
    for what, spec in variants.items():
        with pytest.raises(WouldBuildAModel):
            _extract(cache, manifest, spec)
            pytest.fail(f"a different {what} must not reuse cached features")
    assert _extract(cache, manifest).hit  # the others did not evict the first
    assert _extract(cache, manifest, replace(SPEC, seed=2)).hit


def test_the_seed_matters_only_for_random_weights():
    imagenet = FeatureSpec("vgg16", "imagenet", 32)
    assert imagenet.cache_identity() == replace(imagenet, seed=7).cache_identity()
    assert SPEC.cache_identity() != replace(SPEC, seed=7).cache_identity()


def test_rows_follow_the_manifest_order(cache, manifest):
    full = _extract(cache, manifest)
    paths, labels = manifest.files("train")
    assert len({row.tobytes() for row in np.asarray(full.features)}) == len(paths)
    chosen = [4, 0, 5, 1]  # a subset, reordered
    rows = [(paths[i], manifest.classes[labels[i]], "train") for i in chosen]
    subset = Manifest(manifest.root, manifest.classes, rows, {})
    partial = _extract(cache, subset)
    assert not partial.hit
    assert partial.paths == [paths[i] for i in chosen]
    assert list(partial.labels) == [labels[i] for i in chosen]
    np.testing.assert_allclose(partial.features, np.asarray(full.features)[chosen],
                               rtol=1e-4, atol=1e-5)


def test_clear_frees_the_cache(cache, manifest, monkeypatch):
    first = _extract(cache, manifest)
    folder = first.folder
    del first  # the memory map holds the file open
    freed = cache.clear()
    assert freed > 6 * 512 * 4  # at least the float32 features
    assert not folder.exists() and cache.size_bytes() == 0

    def would_build(spec):
        raise WouldBuildAModel(spec)

    monkeypatch.setattr(features_module, "build_extractor", would_build)
    with pytest.raises(WouldBuildAModel):  # the next request computes afresh
        _extract(cache, manifest)


def test_an_empty_split_is_a_clear_error(cache, manifest):
    with pytest.raises(DatasetError, match="validation split"):
        cache.extract(manifest, "validation", SPEC)


def test_an_image_deleted_since_the_split_is_a_clear_error(cache, manifest):
    paths, _ = manifest.files("train")
    Path(paths[3]).unlink()
    with pytest.raises(DatasetError, match=Path(paths[3]).name):
        _extract(cache, manifest)


def test_an_image_broken_since_the_split_is_a_clear_error_and_leaves_no_debris(cache, manifest):
    paths, _ = manifest.files("train")
    Path(paths[1]).write_bytes(b"not a picture any more")
    with pytest.raises(ImageError, match=Path(paths[1]).name) as caught:
        _extract(cache, manifest)
    assert "changed after the folder was checked" in str(caught.value)
    assert list(cache.root.iterdir()) == []
