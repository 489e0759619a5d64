"""The chapter's three ways to reuse a conv base, and the baseline they beat: what is frozen in
which phase, and the models.

from_scratch                  the chapter's small convnet (5.2), trained with augmentation from
                              random weights: no pretrained base, nothing frozen
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
    "from_scratch": (
        "From scratch: no pretrained base at all. The chapter's small convnet (four conv + max "
        "pooling blocks, 32 to 128 filters, then Dense 512) learns from your photos alone, "
        "with data augmentation; nothing is frozen. The baseline the other strategies beat "
        "(the chapter: about 82% on Dogs vs Cats after 100 epochs). The backbone only sets "
        "the input size; pixels are rescaled by 1/255 as in the chapter."),
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
        "learning rate, so the most specialised features adapt to your images (the chapter: "
        "about 97% with VGG16). The classifier trains on the view bank; fine-tuning then "
        "runs the base on new augmented photos every epoch, as the chapter does: trained on "
        "the bank's stored views the unfrozen block learnt them by heart and ended 0.3 points "
        "lower. With a base as strong as MobileNetV2 the gains are small: on Dogs vs Cats "
        "(3 seeds, 30 + 30 epochs) fine-tuning raised the test accuracy by 0.1 to 0.25 points "
        "on every seed, to 97.4% on the mean, level with both kinds of feature extraction "
        "(97.4%); with 0 views, everything on the fly, 97.7% for 1.5× the CPU time "
        "(docs/LADDER.md)."),
}


def output_spec(num_classes: int) -> tuple[int, str, str]:
    """(units, activation, loss): sigmoid + binary cross-entropy for two classes, as in the
    chapter; softmax + sparse categorical cross-entropy for more."""
    if num_classes == 2:
        return 1, "sigmoid", "binary_crossentropy"
    return num_classes, "softmax", "sparse_categorical_crossentropy"


def build_head(feature_shape, num_classes: int, config: TrainConfig) -> keras.Model:
    """The chapter's classifier: Flatten → Dense(256, relu) → Dropout(0.5) → output. With
    `dense_units` 0 the hidden layer goes (a linear head, as a logistic regression); with
    `standardize` the averaged features pass a Normalization layer, to be adapted on the
    training split (`adapt_standardizer`); `weight_decay` puts an L2 penalty on the output's
    kernel."""
    units, activation, _ = output_spec(num_classes)
    layers = [keras.Input(tuple(feature_shape)),
              keras.layers.Flatten(name="flatten") if config.pooling == "flatten"
              else keras.layers.GlobalAveragePooling2D(name="avg_pool")]
    if config.standardize:
        layers.append(keras.layers.Normalization(name="standardize"))
    if config.dense_units:
        layers.append(keras.layers.Dense(config.dense_units, activation="relu", name="dense"))
    decay = keras.regularizers.L2(config.weight_decay) if config.weight_decay else None
    layers += [keras.layers.Dropout(config.dropout, name="dropout"),
               keras.layers.Dense(units, activation=activation, dtype="float32",
                                  kernel_regularizer=decay, name="predictions")]
    return keras.Sequential(layers, name="head")


def adapt_standardizer(head: keras.Model, pooled_features: np.ndarray) -> None:
    """Set a standardizing head's means and variances from the training split's averaged
    features (N, C); a head without one is left as it is."""
    if not any(layer.name == "standardize" for layer in head.layers):
        return
    layer = head.get_layer("standardize")
    layer.adapt(pooled_features)
    # A feature constant on the training split (a channel no training photo lights) would be
    # divided by Keras' epsilon, 1e-7, and blow up on a photo that lights it: scale it by 1,
    # as scikit-learn's StandardScaler does.
    variance = keras.ops.convert_to_numpy(layer.adapt_variance)
    layer.adapt_variance.assign(np.where(variance > 1e-12, variance, 1.0))
    layer.finalize_state()


def build_base_for(config: TrainConfig) -> keras.Model:
    if config.weights == "none":
        keras.utils.set_random_seed(config.seed)  # the same random base as the feature cache
    return build_base(get_backbone(config.backbone), config.weights, config.image_size)


def build_full_model(base: keras.Model, head: keras.Model, config: TrainConfig,
                     augment: bool) -> keras.Model:
    """Image (any size) → resize → [augmentation] → preprocess → base (inference mode) → head.

    The base is called with training=False, but in Keras 3 fit()'s training=True overrides
    that for nested models (keras-team/keras#20285), so `unfreeze_from` also keeps BatchNorm
    frozen; augmentation is active only in fit().
    """
    backbone = get_backbone(config.backbone)
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Resizing(config.image_size, config.image_size, name="resize")(inputs)
    if augment:
        x = augmentation_layers(AugmentationSettings(**config.augmentation), seed=config.seed)(x)
    x = Preprocess(preprocess_mode(backbone, config.preprocessing), name="preprocess")(x)
    x = base(x, training=False)
    return keras.Model(inputs, head(x), name=f"{backbone.name}_{config.strategy}")


def build_scratch_model(config: TrainConfig, num_classes: int, augment: bool
                        ) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The chapter's convnet from 5.2 (Conv2D 32-64-128-128, 3×3 relu, each followed by 2×2
    max pooling, Flatten, Dropout 0.5, Dense 512 relu, output), trained from random weights.

    Image (any size) → resize → [augmentation] → 1/255 → convnet → head: the same outer shape as
    the transfer models, so prediction and evaluation need nothing else. Returns (model,
    convnet, head); `scratch_inference_model(convnet, head, config)` is what a run saves.
    """
    keras.utils.set_random_seed(config.seed)
    units, activation, _ = output_spec(num_classes)
    size = config.image_size
    images = keras.Input((size, size, 3))
    x = images
    for i, filters in enumerate((32, 64, 128, 128), 1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    convnet = keras.Model(images, x, name="convnet")
    head = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.5, name="dropout"),
        keras.layers.Dense(512, activation="relu", name="dense"),
        keras.layers.Dense(units, activation=activation, dtype="float32", name="predictions"),
    ], name="head")
    return _scratch_model(convnet, head, config, augment), convnet, head


def _scratch_model(convnet, head, config: TrainConfig, augment: bool) -> keras.Model:
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Resizing(config.image_size, config.image_size, name="resize")(inputs)
    if augment:
        x = augmentation_layers(AugmentationSettings(**config.augmentation), seed=config.seed)(x)
    # The chapter's 1/255, as the layer every saved model names "preprocess": prediction,
    # Grad-CAM, the "none of these" check and the export find their parts by these names.
    x = Preprocess("rescale", name="preprocess")(x)
    return keras.Model(inputs, head(convnet(x)), name="from_scratch")


def scratch_inference_model(convnet, head, config: TrainConfig) -> keras.Model:
    """The trained convnet and head without augmentation (see `inference_model`)."""
    return _scratch_model(convnet, head, config, augment=False)


def inference_model(base: keras.Model, head: keras.Model, config: TrainConfig) -> keras.Model:
    """What a run saves: the same base and head without augmentation, which does nothing at
    inference, and which Keras 3.15 cannot load back (RandomShear rejects its own config)."""
    return build_full_model(base, head, config, augment=False)


def compile_model(model: keras.Model, num_classes: int, learning_rate: float,
                  jit_compile="auto", steps_per_execution: int = 1) -> None:
    _, _, loss = output_spec(num_classes)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate), loss=loss,
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)


def freeze_base(base: keras.Model) -> None:
    base.trainable = False


def unfreeze_from(base: keras.Model, layer_name: str) -> list[str]:
    """The chapter's loop: every layer from `layer_name` up trains, everything below is frozen.
    BatchNorm layers stay frozen, which keeps them in inference mode (their statistics fixed),
    as Keras' fine-tuning guide advises. Returns the names of the unfrozen layers."""
    names = [layer.name for layer in base.layers]
    if layer_name not in names:
        raise RunError(f"The base has no layer {layer_name!r} to fine-tune from; "
                       f"pick one of its layers (e.g. {names[-5]}).")
    base.trainable = True
    start = names.index(layer_name)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return [layer.name for layer in base.layers[start:] if layer.weights and layer.trainable]


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
                 layers_changed=[name for name, value in trained.items()
                                 if after.get(name) != value])
    if changed:
        raise RunError(f"Frozen layers changed during phase {audit['phase']}: "
                       f"{', '.join(changed[:5])}. The freeze did not hold; the run is invalid.")
    return audit


def layer_below(base: keras.Model, boundary: str) -> str:
    """The last frozen layer under the fine-tuning boundary: where the frozen prefix ends."""
    return name_below([layer.name for layer in base.layers], boundary)


def name_below(names: list[str], boundary: str) -> str:
    """`layer_below` from the base's layer names alone (the Train page has only those)."""
    if boundary not in names:
        raise RunError(f"The base has no layer {boundary!r} to fine-tune from; "
                       f"pick one of its layers (e.g. {names[-5]}).")
    if names.index(boundary) < 2:
        raise RunError(f"Cannot cut the base below {boundary!r}; choose a layer higher up.")
    return names[names.index(boundary) - 1]


def top_model(base: keras.Model, boundary: str) -> keras.Model:
    """The base from `boundary` up, as a model of its own that shares the base's layers (so
    training it trains the full model). Only where the graph is a chain at the boundary: a
    residual connection that skips over it leaves the top without all its inputs."""
    below = base.get_layer(layer_below(base, boundary))
    try:
        return keras.Model(below.output, base.output, name="top")
    except ValueError as exc:
        raise RunError(f"The base cannot be cut at {boundary!r} (a connection skips over it: "
                       f"{exc}); train without the view bank, or choose another layer.") from None


def cached_trainer(base: keras.Model, head: keras.Model, boundary: str | None) -> keras.Model:
    """What trains on cached features: the head alone on base outputs, or, with a boundary,
    the top of the base (BatchNorm frozen, so in inference mode) and the head on the outputs
    of the frozen prefix."""
    if boundary is None:
        return head
    top = top_model(base, boundary)
    inputs = keras.Input(top.input.shape[1:], name="prefix_features")
    return keras.Model(inputs, head(top(inputs)), name="top_and_head")
