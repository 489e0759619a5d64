"""The chapter's pipeline (DLwP 1st ed., section 5.3), ported to Keras 3 with the fewest changes.

This is the reference Transfer Lab is benchmarked against, so it is faithful, not optimised: the
same folder layout, the same `ImageDataGenerator` input pipeline, the same per-batch
`conv_base.predict` loop, the same heads, optimisers, learning rates, epochs and steps. The code
it follows is the "complete code" of /work/shared/seed/chapter-5.3-blog.txt, with the faults
listed in /work/shared/seed/README.md fixed as below.

Strategies (the chapter's three):
  extract    5.3.1.1 fast feature extraction: `extract_features` over train/validation/test,
             then Dense(256, relu) -> Dropout(0.5) -> Dense(1, sigmoid) on the flattened features.
  augmented  5.3.1.2 the frozen conv base end to end with data augmentation.
  fine_tune  5.3.2 the above, then unfreeze from `block5_conv1` up and train at 1e-5.

Deviations from the chapter, and why
------------------------------------
Keras 3 renames (the code would not run otherwise):
  * `fit_generator(...)` -> `fit(...)`, `evaluate_generator(...)` -> `evaluate(...)`: removed
    from Keras 3; the arguments (`steps_per_epoch`, `validation_data`, `validation_steps`,
    `steps`) are unchanged.
  * `optimizers.RMSprop(lr=...)` -> `optimizers.RMSprop(learning_rate=...)`: `lr` is gone.
  * Imports come from `keras` instead of `tensorflow.keras`, and `ImageDataGenerator` from
    `keras.src.legacy.preprocessing.image`, where Keras 3 keeps it (deprecated). It is the very
    class `tensorflow.keras.preprocessing.image.ImageDataGenerator` still resolves to in
    TF 2.21, so behaviour is identical.
  * `predict(..., verbose=0)` in `extract_features`: Keras 2.1 (the chapter's) defaulted to
    verbose=0; Keras 3 defaults to a progress bar per call, i.e. one line per 20 images.

Fixes of the seed's known faults (README "Known faults"):
  * The dog test split copied `range(3000, 3000)` (no dog test images): it is 3000-3999.
  * `optimizers` is imported; `plt` (plots) is not used at all; `epochs` is a parameter.
  * Images are linked (symlinks) instead of copied: the photos must not be duplicated into a
    work folder, and a link reads the same bytes.

Generalisations, each a parameter whose default is the chapter's value:
  * The backbone: `vgg16` (the chapter's VGG16) or `mobilenet_v2`; `weights` None or
    "imagenet"; `image_size` (150). The feature array's shape comes from
    `conv_base.output_shape` instead of the literal (4, 4, 512), which only fits VGG16 at 150.
  * The fine-tuning boundary: `block5_conv1` for VGG16 (the chapter's); for MobileNetV2 the
    layer at index 100, `block_11_expand_relu`, as in the TensorFlow tutorial "Transfer
    learning and fine-tuning" (`fine_tune_at = 100`). The chapter's loop is kept as is, so for
    MobileNetV2 the BatchNormalization layers above the boundary train too (with batch
    statistics of 20 images), exactly what that loop does to any model.
  * Epochs, steps and sample counts; when a smaller layout is used, a default step count is
    capped at what the folder holds (the chapter's 200/50/50 assume 4000/2000/2000 images).
  * `seed`: optional; the chapter sets none (None here keeps it so).

Kept on purpose although a product would change them (this is the baseline):
  * Inputs are rescaled by 1/255, not with the backbone's `preprocess_input` (VGG16 expects
    caffe-style BGR mean subtraction, MobileNetV2 [-1, 1]).
  * `flow_from_directory` shuffles validation and test too, and the chapter's
    validation_steps=50 and test steps=50 (batch 20) read 1000 of the 2000 validation and
    1000 of the 2000 test images (the blogger doubled the book's split but kept its steps).
  * `Dense(..., input_dim=...)`: Keras 3 still accepts it (with a UserWarning).
  * Data loading stays in Python: the extraction loop decodes JPEGs in the main thread between
    `predict` calls; `fit` reads the generator through Keras 3's PyDataset adapter (one worker,
    tf.data prefetch), like Keras 2's one-thread enqueuer.

Measurement only (no effect on what is trained): wall-clock timers around the extraction loop,
and a callback in `fit` that separates the time spent in validation from the time spent
training.

Weights: `weights="imagenet"` downloads unless Keras finds the file under `$KERAS_HOME/models`;
offline, set KERAS_HOME (e.g. /work/shared/keras-home, which has MobileNetV2 but not VGG16)
before running. Speed can be measured with `weights=None`.

CLI (prints one JSON object on stdout; Keras' progress goes to stderr):
  python bench/chapter_baseline.py --data /work/shared/data/dogs-vs-cats --work /tmp/chapter \
      --mode extract|head|augmented|fine_tune|run --backbone vgg16 --weights none \
      --image-size 150 --samples 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

import keras
from keras import layers, models, optimizers
from keras.applications import VGG16, MobileNetV2
from keras.src.legacy.preprocessing.image import ImageDataGenerator

BATCH_SIZE = 20  # the chapter's batch_size (32 in the book; the blogger's 20)
CLASSES = ("cats", "dogs")
SPLITS = ("train", "validation", "test")

BACKBONES = {
    "vgg16": VGG16,
    "mobilenet_v2": MobileNetV2,
}
FINE_TUNE_FROM = {
    "vgg16": "block5_conv1",  # the chapter's
    "mobilenet_v2": "block_11_expand_relu",  # layers[100], TF tutorial's fine_tune_at = 100
}
STRATEGIES = ("extract", "augmented", "fine_tune")

# The chapter's settings.
CHAPTER_COUNTS = (2000, 1000, 1000)  # per class: train, validation, test
CHAPTER_SAMPLE_COUNTS = (4000, 2000, 2000)  # extract_features(train/validation/test, ...)
CHAPTER_HEAD_EPOCHS = 30
CHAPTER_EPOCHS = 30
CHAPTER_FINE_TUNE_EPOCHS = 100
CHAPTER_STEPS_PER_EPOCH = 200
CHAPTER_VALIDATION_STEPS = 50
CHAPTER_TEST_STEPS = 50


# --------------------------------------------------------------------------------------------
# Data preparation: the chapter's folders, as links.


def make_chapter_layout(src_dir, dest_dir, counts=CHAPTER_COUNTS):
    """Build `dest_dir/{train,validation,test}/{cats,dogs}` as symlinks into the flat Kaggle folder.

    Per class, indices [0, counts[0]) go to train, the next counts[1] to validation and the next
    counts[2] to test (the chapter's 0-1999 / 2000-2999 / 3000-3999 by default, dogs included).
    Idempotent: existing correct links are kept, wrong or extra links are replaced or removed.
    Returns `dest_dir` (the chapter's `base_dir`) as an absolute path.
    """
    counts = tuple(int(c) for c in counts)
    if len(counts) != 3 or any(c < 0 for c in counts):
        raise ValueError(f"counts must be three non-negative ints (train, validation, test), got {counts!r}")
    src_dir = os.path.abspath(src_dir)
    base_dir = os.path.abspath(dest_dir)
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"src_dir {src_dir!r} is not a folder of cat.N.jpg / dog.N.jpg images")

    start = 0
    for split, count in zip(SPLITS, counts):
        for class_dir in CLASSES:
            animal = class_dir[:-1]  # "cats" -> "cat"
            target_dir = os.path.join(base_dir, split, class_dir)
            os.makedirs(target_dir, exist_ok=True)
            fnames = ["{}.{}.jpg".format(animal, i) for i in range(start, start + count)]
            wanted = set(fnames)
            for existing in os.listdir(target_dir):
                path = os.path.join(target_dir, existing)
                if existing in wanted:
                    continue
                if os.path.islink(path):
                    os.remove(path)
                else:
                    raise FileExistsError(
                        f"{path!r} is not one of our links; use an empty or dedicated dest_dir")
            for fname in fnames:
                src = os.path.join(src_dir, fname)
                dst = os.path.join(target_dir, fname)
                if not os.path.isfile(src):
                    raise FileNotFoundError(f"{src!r} is missing: the split needs it (counts={counts})")
                if os.path.islink(dst) and os.readlink(dst) == src:
                    continue
                if os.path.lexists(dst):
                    os.remove(dst)
                os.symlink(src, dst)
        start += count
    return base_dir


def _split_dir(data_dir, split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = os.path.join(data_dir, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path!r} does not exist: data_dir must be the chapter layout; "
            "build it with make_chapter_layout(src_dir, dest_dir)")
    return path


def _count_images(directory):
    return sum(len(files) for _, _, files in os.walk(directory, followlinks=True))


# --------------------------------------------------------------------------------------------
# The conv base.


def make_conv_base(backbone="vgg16", weights=None, image_size=150):
    """`VGG16(weights=..., include_top=False, input_shape=(150, 150, 3))`, or MobileNetV2 likewise."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f"weights must be None, 'imagenet' or a file path, got {weights!r}")
    image_size = int(image_size)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    return BACKBONES[backbone](weights=weights, include_top=False,
                               input_shape=(image_size, image_size, 3))


# --------------------------------------------------------------------------------------------
# Strategy 1: fast feature extraction without data augmentation.


def extract_features(conv_base, datagen, directory, sample_count, image_size=150,
                     batch_size=BATCH_SIZE):
    """The chapter's `extract_features`, with its globals as arguments.

    Returns (features, labels, seconds), `seconds` being the wall time of the loop alone
    (the generator is created before it; the first batch, hence the first `predict` call's
    tracing, is inside it).
    """
    if sample_count <= 0 or sample_count % batch_size:
        # The chapter's slice assignment fails on a partial last batch.
        raise ValueError(f"sample_count must be a positive multiple of {batch_size}, got {sample_count}")
    features = np.zeros(shape=(sample_count,) + tuple(conv_base.output_shape[1:]))
    labels = np.zeros(shape=(sample_count))
    generator = datagen.flow_from_directory(
        directory,
        target_size=(image_size, image_size),
        batch_size=batch_size,
        class_mode='binary')
    if sample_count > generator.samples:
        # The chapter's loop would wrap around and reuse images (and hit a short batch).
        raise ValueError(f"sample_count {sample_count} exceeds the {generator.samples} images in {directory!r}")
    start = time.perf_counter()
    i = 0
    for inputs_batch, labels_batch in generator:
        features_batch = conv_base.predict(inputs_batch, verbose=0)
        features[i * batch_size : (i + 1) * batch_size] = features_batch
        labels[i * batch_size : (i + 1) * batch_size] = labels_batch
        i += 1
        if i * batch_size >= sample_count:
            # Note that since generators yield data indefinitely in a loop,
            # we must `break` after every image has been seen once.
            break
    seconds = time.perf_counter() - start
    return features, labels, seconds


def extract_features_throughput(data_dir, split="train", backbone="vgg16", weights=None,
                                image_size=150, sample_count=None):
    """Time the chapter's extraction loop over `sample_count` images of one split.

    `data_dir` is the chapter layout (see `make_chapter_layout`). The conv base is built
    before timing; the loop, first batch included, is timed.
    Returns {"images", "seconds", "images_per_second", ...}.
    """
    directory = _split_dir(data_dir, split)
    if sample_count is None:
        sample_count = _count_images(directory) // BATCH_SIZE * BATCH_SIZE
    conv_base = make_conv_base(backbone, weights, image_size)
    datagen = ImageDataGenerator(rescale=1./255)
    features, _, seconds = extract_features(conv_base, datagen, directory, int(sample_count),
                                            image_size=image_size)
    return {
        "images": int(sample_count),
        "seconds": seconds,
        "images_per_second": sample_count / seconds,
        "split": split,
        "backbone": backbone,
        "weights": weights,
        "image_size": int(image_size),
        "feature_shape": list(features.shape[1:]),
    }


def _train_head(train_features, train_labels, validation_features, validation_labels,
                epochs=CHAPTER_HEAD_EPOCHS, verbose="auto"):
    """The chapter's densely connected classifier on the flattened features."""
    flat = int(np.prod(train_features.shape[1:]))
    model = models.Sequential()
    model.add(layers.Dense(256, activation='relu', input_dim=flat))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(1, activation='sigmoid'))

    model.compile(optimizer=optimizers.RMSprop(learning_rate=2e-5),
                  loss='binary_crossentropy',
                  metrics=['acc'])
    timer = _PhaseTimer()
    history = model.fit(train_features, train_labels,
                        epochs=epochs,
                        batch_size=20,
                        validation_data=(validation_features, validation_labels),
                        callbacks=[timer],
                        verbose=verbose)
    return model, history, timer


# --------------------------------------------------------------------------------------------
# Strategies 2 and 3: the frozen base end to end with augmentation, then fine-tuning.


def _augmented_generators(data_dir, image_size):
    train_datagen = ImageDataGenerator(
        rescale=1./255,
        rotation_range=40,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=0.2,
        zoom_range=0.2,
        horizontal_flip=True,
        fill_mode='nearest')

    # Note that the validation data should not be augmented!
    test_datagen = ImageDataGenerator(rescale=1./255)

    train_generator = train_datagen.flow_from_directory(
        # This is the target directory
        _split_dir(data_dir, "train"),
        # All images will be resized to 150x150
        target_size=(image_size, image_size),
        batch_size=20,
        # Since we use binary_crossentropy loss, we need binary labels
        class_mode='binary')

    validation_generator = test_datagen.flow_from_directory(
        _split_dir(data_dir, "validation"),
        target_size=(image_size, image_size),
        batch_size=20,
        class_mode='binary')
    return test_datagen, train_generator, validation_generator


def _frozen_model(conv_base):
    model = models.Sequential()
    model.add(conv_base)
    model.add(layers.Flatten())
    model.add(layers.Dense(256, activation='relu'))
    model.add(layers.Dense(1, activation='sigmoid'))
    before = len(model.trainable_weights)
    conv_base.trainable = False
    after = len(model.trainable_weights)
    # The chapter prints these (30 and 4 for VGG16): the freeze audit.
    return model, {"before_freezing": before, "after_freezing": after}


def _fit_augmented(model, train_generator, validation_generator, learning_rate, steps_per_epoch,
                   epochs, validation_steps, verbose="auto"):
    model.compile(loss='binary_crossentropy',
                  optimizer=optimizers.RMSprop(learning_rate=learning_rate),
                  metrics=['acc'])
    timer = _PhaseTimer()
    history = model.fit(
        train_generator,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        validation_data=validation_generator,
        validation_steps=validation_steps,
        callbacks=[timer],
        verbose=verbose)
    return history, timer


def _unfreeze_from(conv_base, layer_name):
    """The chapter's loop: everything from `layer_name` up trains, everything below is frozen."""
    if layer_name not in [layer.name for layer in conv_base.layers]:
        raise ValueError(f"fine_tune_from {layer_name!r} is not a layer of {conv_base.name}")
    conv_base.trainable = True

    set_trainable = False
    for layer in conv_base.layers:
        if layer.name == layer_name:
            set_trainable = True
        if set_trainable:
            layer.trainable = True
        else:
            layer.trainable = False


def _steps(requested, chapter_value, generator):
    """A step count: the caller's, else the chapter's capped at one pass over the folder."""
    if requested is not None:
        requested = int(requested)
        if requested <= 0:
            raise ValueError(f"step counts must be positive, got {requested}")
        return requested
    return min(chapter_value, len(generator))


def train_augmented(data_dir, backbone="vgg16", weights=None, image_size=150, steps=None,
                    epochs=CHAPTER_EPOCHS, validation_steps=None, verbose="auto"):
    """Strategy 2's training alone: the frozen base, augmentation, RMSprop(2e-5).

    `steps` is `steps_per_epoch` (chapter: 200), `validation_steps` the chapter's 50.
    Returns {"images_per_second": training images / training seconds, "seconds": the whole
    `fit` call, "train_seconds", "validation_seconds", "history": {...}, ...}; training time
    includes `fit`'s set-up and the first step's tracing, validation time is measured apart.
    """
    conv_base = make_conv_base(backbone, weights, image_size)
    _, train_generator, validation_generator = _augmented_generators(data_dir, image_size)
    model, trainable_weights = _frozen_model(conv_base)
    steps = _steps(steps, CHAPTER_STEPS_PER_EPOCH, train_generator)
    validation_steps = _steps(validation_steps, CHAPTER_VALIDATION_STEPS, validation_generator)
    start = time.perf_counter()
    history, timer = _fit_augmented(model, train_generator, validation_generator, 2e-5,
                                    steps, epochs, validation_steps, verbose)
    seconds = time.perf_counter() - start
    train_seconds = seconds - sum(timer.validation_seconds)
    images = steps * epochs * BATCH_SIZE
    return {
        "images": images,
        "images_per_second": images / train_seconds,
        "seconds": seconds,
        "train_seconds": train_seconds,
        "validation_seconds": sum(timer.validation_seconds),
        "validation_images": validation_steps * epochs * BATCH_SIZE,
        "epoch_seconds": timer.epoch_seconds,
        "steps_per_epoch": steps,
        "epochs": epochs,
        "validation_steps": validation_steps,
        "trainable_weights": trainable_weights,
        "history": _plain(history.history),
        "backbone": backbone,
        "weights": weights,
        "image_size": int(image_size),
    }


# --------------------------------------------------------------------------------------------
# All three strategies, photos to test accuracy.


def run_chapter(data_dir, backbone="vgg16", weights=None, image_size=150, strategy="extract",
                epochs=None, fine_tune_epochs=CHAPTER_FINE_TUNE_EPOCHS, steps_per_epoch=None,
                validation_steps=None, test_steps=None, sample_counts=None, fine_tune_from=None,
                seed=None, verbose="auto"):
    """Run one of the chapter's strategies end to end on the chapter layout in `data_dir`.

    strategy "extract": extract train/validation/test features (`sample_counts`, chapter
    4000/2000/2000), train the head for `epochs` (30), evaluate it on the test features.
    strategy "augmented": frozen base with augmentation for `epochs` (30) x `steps_per_epoch`
    (200), validation_steps 50, then `evaluate(test_generator, steps=test_steps)` (50).
    strategy "fine_tune": "augmented", then unfreeze from `fine_tune_from` (VGG16:
    block5_conv1) and train `fine_tune_epochs` (100) more at RMSprop(1e-5), then the test.

    Returns {"val_accuracy": the last epoch's, "test_accuracy", "seconds", "phase_seconds",
    "history", "settings", ...}.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    if epochs is None:
        epochs = CHAPTER_HEAD_EPOCHS if strategy == "extract" else CHAPTER_EPOCHS
    start = time.perf_counter()
    phases = {}
    settings = {"strategy": strategy, "backbone": backbone, "weights": weights,
                "image_size": int(image_size), "epochs": int(epochs), "seed": seed}

    t = time.perf_counter()
    conv_base = make_conv_base(backbone, weights, image_size)
    phases["build"] = time.perf_counter() - t

    if strategy == "extract":
        datagen = ImageDataGenerator(rescale=1./255)
        if sample_counts is None:
            sample_counts = [min(chapter, _count_images(_split_dir(data_dir, split)) // BATCH_SIZE * BATCH_SIZE)
                             for chapter, split in zip(CHAPTER_SAMPLE_COUNTS, SPLITS)]
        sample_counts = [int(c) for c in sample_counts]
        settings["sample_counts"] = sample_counts
        arrays = {}
        for split, count in zip(SPLITS, sample_counts):
            t = time.perf_counter()
            features, labels, _ = extract_features(conv_base, datagen, _split_dir(data_dir, split),
                                                   count, image_size=image_size)
            # The chapter reshapes to (samples, 4 * 4 * 512) for the Dense head.
            arrays[split] = (np.reshape(features, (count, -1)), labels)
            phases["extract_" + split] = time.perf_counter() - t
        t = time.perf_counter()
        model, history, timer = _train_head(*arrays["train"], *arrays["validation"],
                                            epochs=epochs, verbose=verbose)
        head_seconds = time.perf_counter() - t
        phases["head_validation"] = sum(timer.validation_seconds)
        phases["head_train"] = head_seconds - phases["head_validation"]
        t = time.perf_counter()
        test_loss, test_acc = model.evaluate(*arrays["test"], verbose=verbose)
        phases["test"] = time.perf_counter() - t
        histories = {"head": _plain(history.history)}
        val_accuracy = history.history["val_acc"][-1]
    else:
        test_datagen, train_generator, validation_generator = _augmented_generators(data_dir, image_size)
        model, trainable_weights = _frozen_model(conv_base)
        steps_per_epoch = _steps(steps_per_epoch, CHAPTER_STEPS_PER_EPOCH, train_generator)
        validation_steps = _steps(validation_steps, CHAPTER_VALIDATION_STEPS, validation_generator)
        settings.update(steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                        trainable_weights=trainable_weights)
        t = time.perf_counter()
        history, timer = _fit_augmented(model, train_generator, validation_generator, 2e-5,
                                        steps_per_epoch, epochs, validation_steps, verbose)
        phases["validation"] = sum(timer.validation_seconds)
        phases["train"] = time.perf_counter() - t - phases["validation"]
        histories = {"augmented": _plain(history.history)}
        val_accuracy = history.history["val_acc"][-1]

        if strategy == "fine_tune":
            fine_tune_from = fine_tune_from or FINE_TUNE_FROM[backbone]
            _unfreeze_from(conv_base, fine_tune_from)
            settings.update(fine_tune_from=fine_tune_from, fine_tune_epochs=int(fine_tune_epochs),
                            fine_tune_trainable_weights=len(model.trainable_weights))
            t = time.perf_counter()
            history, timer = _fit_augmented(model, train_generator, validation_generator, 1e-5,
                                            steps_per_epoch, fine_tune_epochs, validation_steps,
                                            verbose)
            phases["fine_tune_validation"] = sum(timer.validation_seconds)
            phases["fine_tune_train"] = time.perf_counter() - t - phases["fine_tune_validation"]
            histories["fine_tune"] = _plain(history.history)
            val_accuracy = history.history["val_acc"][-1]

        t = time.perf_counter()
        test_generator = test_datagen.flow_from_directory(
            _split_dir(data_dir, "test"),
            target_size=(image_size, image_size),
            batch_size=20,
            class_mode='binary')
        test_steps = _steps(test_steps, CHAPTER_TEST_STEPS, test_generator)
        settings["test_steps"] = test_steps
        test_loss, test_acc = model.evaluate(test_generator, steps=test_steps, verbose=verbose)
        phases["test"] = time.perf_counter() - t

    return {
        "val_accuracy": float(val_accuracy),
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "seconds": time.perf_counter() - start,
        "phase_seconds": phases,
        "history": histories,
        "settings": settings,
    }


# --------------------------------------------------------------------------------------------
# Helpers.


class _PhaseTimer(keras.callbacks.Callback):
    """Wall time per epoch, and the part of it `fit` spends in validation."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds = []
        self.validation_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._validation = 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        self.validation_seconds.append(self._validation)


def _plain(history):
    return {key: [float(v) for v in values] for key, values in history.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the flat Kaggle folder (cat.N.jpg, dog.N.jpg)")
    parser.add_argument("--work", required=True, help="where the chapter layout of links is built")
    parser.add_argument("--mode", default="extract",
                        choices=["extract", "head", "augmented", "fine_tune", "run"],
                        help="extract: extraction throughput; head: strategy 1 end to end; "
                             "augmented: strategy 2's training throughput; fine_tune: strategy 3 "
                             "end to end; run: run_chapter with --strategy")
    parser.add_argument("--strategy", default="augmented", choices=STRATEGIES, help="for --mode run")
    parser.add_argument("--backbone", default="vgg16", choices=sorted(BACKBONES))
    parser.add_argument("--weights", default="none", help="none, imagenet or a weights file")
    parser.add_argument("--image-size", type=int, default=150)
    parser.add_argument("--counts", type=int, nargs=3, default=list(CHAPTER_COUNTS),
                        metavar=("TRAIN", "VALIDATION", "TEST"), help="images per class in each split")
    parser.add_argument("--split", default="train", choices=SPLITS, help="for --mode extract")
    parser.add_argument("--samples", type=int, default=None,
                        help="extract: images to extract; head: per split (default: the chapter's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--fine-tune-epochs", type=int, default=CHAPTER_FINE_TUNE_EPOCHS)
    parser.add_argument("--fine-tune-from", default=None, help="first layer to unfreeze")
    parser.add_argument("--steps", type=int, default=None, help="steps_per_epoch (chapter: 200)")
    parser.add_argument("--validation-steps", type=int, default=None, help="chapter: 50")
    parser.add_argument("--test-steps", type=int, default=None, help="chapter: 50")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights

    out = sys.stdout
    # Keras writes progress bars and "Found N images" to stdout; keep stdout for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        base_dir = make_chapter_layout(args.data, args.work, args.counts)
        common = dict(backbone=args.backbone, weights=weights, image_size=args.image_size)
        if args.mode == "extract":
            result = extract_features_throughput(base_dir, args.split, sample_count=args.samples, **common)
        elif args.mode == "augmented":
            if args.seed is not None:
                keras.utils.set_random_seed(args.seed)
            result = train_augmented(base_dir, steps=args.steps,
                                     epochs=args.epochs or CHAPTER_EPOCHS,
                                     validation_steps=args.validation_steps, **common)
        else:
            strategy = {"head": "extract", "fine_tune": "fine_tune"}.get(args.mode, args.strategy)
            result = run_chapter(
                base_dir, strategy=strategy, epochs=args.epochs,
                fine_tune_epochs=args.fine_tune_epochs, steps_per_epoch=args.steps,
                validation_steps=args.validation_steps, test_steps=args.test_steps,
                sample_counts=None if args.samples is None else [args.samples] * 3,
                fine_tune_from=args.fine_tune_from, seed=args.seed, **common)
    result["mode"] = args.mode
    json.dump(result, out, indent=2)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
