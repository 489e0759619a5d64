"""The chapter's three ways to reuse a conv base: what is frozen in which phase, and the models.

feature_extraction            the base runs once (cached features); a dense head trains on them
feature_extraction_augmented  augmentation → frozen base → head, trained end to end
fine_tune                     as above, then the top of the base (from `fine_tune_from`) is
                              unfrozen and trains with the head at a lower learning rate

Every model saved by a run is the same shape: image in (any size, RGB 0..255) → resize →
the backbone's preprocessing → base → head, so prediction uses what training used.
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np

from .augment import AugmentationSettings, augmentation_layers
from .backbones import batchnorm_layers, build_base, get_backbone, preprocess_mode
from .errors import RunError
from .layers import Preprocess
from .runs import TrainConfig

STRATEGY_HELP = {
    "feature_extraction": (
        "Fast feature extraction: the conv base runs once over your images and its outputs "
        "are cached; only a small dense classifier trains on them. Quickest by far, but no "
        "data augmentation, so it overfits sooner (the chapter: about 90% on Dogs vs Cats)."),
    "feature_extraction_augmented": (
        "Feature extraction with data augmentation: the frozen conv base sits inside the "
        "model behind random flips, rotations, shifts and zooms, and the images run through "
        "it on every epoch. Only the classifier's weights change. Slower, overfits less."),
    "fine_tune": (
        "Fine-tuning: first train the classifier on the frozen base (as above), then unfreeze "
        "the top block of the base and train it together with the classifier at a lower "
        "learning rate, so the most specialised features adapt to your images."),
}


def output_spec(num_classes: int) -> tuple[int, str, str]:
    """(units, activation, loss): sigmoid + binary cross-entropy for two classes, as in the
    chapter; softmax + sparse categorical cross-entropy for more."""
    if num_classes == 2:
        return 1, "sigmoid", "binary_crossentropy"
    return num_classes, "softmax", "sparse_categorical_crossentropy"


def build_head(feature_shape, num_classes: int, config: TrainConfig) -> keras.Model:
    """The chapter's classifier: Flatten → Dense(256, relu) → Dropout(0.5) → output."""
    units, activation, _ = output_spec(num_classes)
    pool = (keras.layers.Flatten(name="flatten") if config.pooling == "flatten"
            else keras.layers.GlobalAveragePooling2D(name="avg_pool"))
    return keras.Sequential([
        keras.Input(tuple(feature_shape)),
        pool,
        keras.layers.Dense(config.dense_units, activation="relu", name="dense"),
        keras.layers.Dropout(config.dropout, name="dropout"),
        keras.layers.Dense(units, activation=activation, dtype="float32", name="predictions"),
    ], name="head")


def build_base_for(config: TrainConfig) -> keras.Model:
    if config.weights == "none":
        keras.utils.set_random_seed(config.seed)  # the same random base as the feature cache
    return build_base(get_backbone(config.backbone), config.weights, config.image_size)


def build_full_model(base: keras.Model, head: keras.Model, config: TrainConfig,
                     augment: bool) -> keras.Model:
    """Image (any size) → resize → [augmentation] → preprocess → base (inference mode) → head.

    The base is called with training=False so its BatchNorm layers stay in inference mode
    even when unfrozen (Keras' fine-tuning guide); augmentation is active only in fit().
    """
    backbone = get_backbone(config.backbone)
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Resizing(config.image_size, config.image_size, name="resize")(inputs)
    if augment:
        x = augmentation_layers(AugmentationSettings(**config.augmentation), seed=config.seed)(x)
    x = Preprocess(preprocess_mode(backbone, config.preprocessing), name="preprocess")(x)
    x = base(x, training=False)
    return keras.Model(inputs, head(x), name=f"{backbone.name}_{config.strategy}")


def compile_model(model: keras.Model, num_classes: int, learning_rate: float) -> None:
    _, _, loss = output_spec(num_classes)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate), loss=loss,
                  metrics=["accuracy"])


def freeze_base(base: keras.Model) -> None:
    base.trainable = False


def unfreeze_from(base: keras.Model, layer_name: str) -> list[str]:
    """The chapter's loop: every layer from `layer_name` up trains, everything below is frozen.
    Returns the names of the unfrozen layers."""
    names = [layer.name for layer in base.layers]
    if layer_name not in names:
        raise RunError(f"The base has no layer {layer_name!r} to fine-tune from; "
                       f"pick one of its layers (e.g. {names[-5]}).")
    base.trainable = True
    start = names.index(layer_name)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start
    return [layer.name for layer in base.layers[start:] if layer.weights]


def layer_checksums(model: keras.Model) -> dict[str, str]:
    """A checksum of each weighted layer's values (nested models flattened by name)."""
    sums = {}
    for layer in _weighted_layers(model):
        digest = hashlib.sha1()
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
        sums[layer.name] = digest.hexdigest()[:16]
    return sums


def _weighted_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def trainable_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in _weighted_layers(model) if layer.trainable_weights]


def phase_audit(model: keras.Model, base: keras.Model, phase: str) -> dict:
    """What trains in this phase, before it starts (the chapter's "30 before freezing, 4
    after" check), plus checksums of every frozen layer to compare after the phase."""
    trainable = trainable_layers(model)
    all_sums = layer_checksums(model)
    return {
        "phase": phase,
        "trainable_weight_tensors": len(model.trainable_weights),
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "total_weight_tensors": len(model.weights),
        "total_parameters": int(sum(np.prod(w.shape) for w in model.weights)),
        "trainable_layers": trainable,
        # The base is called with training=False: its BatchNorm layers never update their
        # statistics, even when unfrozen.
        "batchnorm_layers_in_inference_mode": len(batchnorm_layers(base)),
        "frozen_checksums_before": {n: v for n, v in all_sums.items() if n not in trainable},
        "trainable_checksums_before": {n: v for n, v in all_sums.items() if n in trainable},
    }


def check_frozen_unchanged(model: keras.Model, audit: dict) -> dict:
    """Compare frozen layers after a phase; a changed frozen layer is an error."""
    after = layer_checksums(model)
    before = audit["frozen_checksums_before"]
    changed = [name for name, value in before.items() if after.get(name) != value]
    trained = audit["trainable_checksums_before"]
    audit.update(frozen_layers_checked=len(before), frozen_layers_changed=changed,
                 layers_changed=[name for name, value in trained.items() if after.get(name) != value])
    if changed:
        raise RunError(f"Frozen layers changed during phase {audit['phase']}: "
                       f"{', '.join(changed[:5])}. The freeze did not hold; the run is invalid.")
    return audit
