"""The chapter's data augmentation as Keras preprocessing layers that run inside the model.

The chapter's ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
fill_mode='nearest'). Inside the model the work runs where the model runs (the GPU when
there is one) and is skipped at inference. Note: ImageDataGenerator reads shear_range in
*degrees*, so the chapter's shear is a barely visible 0.2°; we reproduce it faithfully.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentationSettings:
    rotation_degrees: float = 40.0
    width_shift: float = 0.2
    height_shift: float = 0.2
    shear_degrees: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: str = "nearest"

    def to_dict(self) -> dict:
        return asdict(self)


CHAPTER = AugmentationSettings()


def augmentation_layers(settings: AugmentationSettings = CHAPTER, seed: int | None = None,
                        name: str = "augmentation"):
    """A keras.Sequential of random layers; active only when called with training=True."""
    import keras

    s = settings
    layers = []

    def layer_seed():
        # One seed per layer: layers sharing a seed draw the same numbers, which would tie
        # every image's rotation to its zoom and its flip.
        return None if seed is None else seed + len(layers)

    if s.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=layer_seed()))
    if s.rotation_degrees:
        layers.append(keras.layers.RandomRotation(s.rotation_degrees / 360.0,
                                                  fill_mode=s.fill_mode, seed=layer_seed()))
    if s.width_shift or s.height_shift:
        layers.append(keras.layers.RandomTranslation(s.height_shift, s.width_shift,
                                                     fill_mode=s.fill_mode, seed=layer_seed()))
    if s.shear_degrees:
        layers.append(keras.layers.RandomShear(x_factor=math.tan(math.radians(s.shear_degrees)),
                                               y_factor=0.0, fill_mode=s.fill_mode,
                                               seed=layer_seed()))
    if s.zoom:
        layers.append(keras.layers.RandomZoom(s.zoom, s.zoom, fill_mode=s.fill_mode,
                                              seed=layer_seed()))
    return keras.Sequential(layers, name=name)


def preview(image: np.ndarray, count: int = 8, seed: int = 0,
            settings: AugmentationSettings = CHAPTER) -> list[np.ndarray]:
    """`count` augmented variants of one RGB uint8 image, for showing what training sees."""
    import keras

    augment = augmentation_layers(settings, seed=seed)
    batch = np.repeat(image[None].astype("float32"), count, axis=0)
    out = keras.ops.convert_to_numpy(augment(batch, training=True))
    return [np.clip(variant, 0, 255).astype("uint8") for variant in out]
