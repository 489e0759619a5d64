"""The chapter's augmentation: visibly different variants while training, repeatable with a
seed, and no effect at all when the model predicts."""

from __future__ import annotations

import keras
import numpy as np

from conftest import COLOURS, colour_image
from transfer_core.augment import augmentation_layers, preview


def _photo(size=48) -> np.ndarray:
    return np.asarray(colour_image(COLOURS["red"], size, seed=3))


def test_preview_gives_distinct_uint8_variants_of_the_photo():
    image = _photo()
    variants = preview(image, count=6, seed=0)
    assert len(variants) == 6
    for variant in variants:
        assert variant.dtype == np.uint8 and variant.shape == image.shape
        assert np.abs(variant.astype(int) - image).mean() > 2  # visibly changed
    distinct = {variant.tobytes() for variant in variants}
    assert len(distinct) == 6


def test_the_same_seed_gives_the_same_variants():
    image = _photo()
    first, again = preview(image, 4, seed=5), preview(image, 4, seed=5)
    other = preview(image, 4, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_each_transformation_is_drawn_independently():
    # With one seed shared by every layer, each image's rotation fixed its zoom and its flip.
    layers = {type(layer).__name__: layer for layer in augmentation_layers(seed=5).layers}
    batch = np.zeros((1000, 8, 8, 3), "float32")
    draw = {name: layer.get_random_transformation(batch, training=True)
            for name, layer in layers.items()}
    angle = np.ravel(draw["RandomRotation"]["angle"])
    zoom = np.ravel(draw["RandomZoom"]["height_zoom"])
    flip = np.ravel(draw["RandomFlip"]["flips"]).astype(float)
    assert abs(np.corrcoef(angle, zoom)[0, 1]) < 0.2
    assert abs(np.corrcoef(angle, flip)[0, 1]) < 0.2


def test_augmentation_does_nothing_at_inference():
    batch = np.stack([_photo(32), np.asarray(colour_image(COLOURS["blue"], 32))]).astype("float32")
    augment = augmentation_layers(seed=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment(batch, training=False)),
                                  batch)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, augment(inputs))
    np.testing.assert_array_equal(model.predict(batch, verbose=0), batch)
    # …and it does act while training, so the two checks above can fail.
    assert not np.array_equal(keras.ops.convert_to_numpy(augment(batch, training=True)), batch)
