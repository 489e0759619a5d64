"""Train a run: the body of the training process. Everything it learns goes into the run folder.

The run's status, per-epoch metrics, progress lines, best model and freeze audit are written as
it goes, so a page (or `runs`) can follow it from another process and a stop request ends it
within one batch with the best model kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import traceback
from dataclasses import dataclass

import keras
import numpy as np

from .balance import class_weights
from .bank import bank_boundary, bank_growth, choose_views
from .datasets import load_manifest
from .device import configure
from .distribute import Placement, check_batch, place, training_input
from .errors import Stopped, TransferLabError
from .feature_rows import FeatureBatches, RowReader, pooled
from .features import Derivation, FeatureCache, FeatureSpec, room_for_features
from .history import is_better
from .precision import building_in, check_set
from .precision import resolve as resolve_precision
from .inputs import changed_file_error, image_dataset
from .recommend import recommended_config, start_from_logistic
from .runs import Run, TrainConfig
from .storage import os_error_in, save_model_atomic, write_failure, write_json_atomic
from .strategies import (adapt_standardizer, build_base_for, build_full_model, build_head,
                         build_scratch_model, cached_trainer, check_frozen_unchanged,
                         compile_model, freeze_base, inference_model, layer_below, phase_audit,
                         scratch_inference_model, top_model, unfreeze_from)

NOTHING_FROZEN = ("from scratch: there is no pretrained base, so nothing is frozen and every "
                  "layer trains from random weights")


@dataclass(frozen=True)
class Phase:
    """One phase of a run, built once from its config (`training_phases`): the head alone
    ("head"), then for fine_tune the top of the base with it ("fine_tune")."""

    name: str
    number: int  # 1 or 2, as metrics.jsonl records it
    first_epoch: int  # fit()'s initial_epoch: the epochs of the phases before, 0-based
    epochs: int
    learning_rate: float
    unfreeze_from: str | None  # the first layer of the base that trains; None: the head only

    @property
    def last_epoch(self) -> int:
        """fit()'s `epochs`: where this phase ends, counted over every phase."""
        return self.first_epoch + self.epochs

    def stage(self, on_cache: bool) -> str:
        """What the run's status says while this phase trains."""
        what = (f"fine-tuning from {self.unfreeze_from}" if self.unfreeze_from else
                "training the classifier" + ("" if on_cache else " on the frozen base"))
        return what + (" on cached features" if on_cache else "")


def training_phases(config: TrainConfig) -> list[Phase]:
    """The run's phases in order (TrainConfig.phases names them)."""
    head = Phase("head", 1, 0, config.epochs, config.learning_rate, None)
    if config.strategy != "fine_tune":
        return [head]
    return [head, Phase("fine_tune", 2, config.epochs, config.fine_tune_epochs,
                        config.fine_tune_learning_rate, config.fine_tune_from)]


def feature_spec(config: TrainConfig, views: int = 0, layer: str | None = None,
                 precision: str = "float32") -> FeatureSpec:
    """`precision`: the resolved one (float32 or bfloat16), never config.precision's "auto"."""
    augmentation = tuple(config.augmentation.items()) if views else ()
    return FeatureSpec(config.backbone, config.weights, config.image_size, config.preprocessing,
                       config.seed, views, augmentation, layer, precision)


def train(run: Run, workspace=None, callbacks=(), timer=None) -> dict:
    """Train `run` to the end (or until stopped); returns the final status. Never raises for a
    user error or a failed write (a full disk): the status says what went wrong, and it is
    written even then (Run.finish).

    Two hooks for measuring (bench/), neither changes what is trained or written:
    `callbacks`, more keras.callbacks.Callback objects given to every fit() after the run's
    own (e.g. one timing the validation passes in on_test_begin/on_test_end); `timer`, a
    function of a step's name returning a context manager that wraps each run of that step,
    for now "features": computing a split's features or reading them from the cache.
    """
    try:
        config = run.config
        run.update_status(state="running", started=time.time(), pid=os.getpid(), error=None,
                          stage="starting", device=configure())
        placement = place(config.distribute)  # first: it splits the CPU or joins the cluster
        check_batch(placement, config.batch_size)
        if placement.kind == "multi-worker" and config.precision == "auto":
            # "auto" measures each machine: workers that chose differently would not agree
            config = dataclasses.replace(config, precision="float32")
        run.update_status(distribute=placement.describe(config.batch_size))
        workspace = workspace or run.folder.parent.parent
        keras.utils.set_random_seed(config.seed)
        if config.settings == "recommended" and not config.recommendation:
            config = _recommend(run, config, workspace, timer or _untimed)
        session = _Session(run, config, workspace, callbacks, timer, placement)
        keras.utils.set_random_seed(config.seed)  # after "auto"'s measurement, which builds models
        session.execute()
        return run.finish(state="finished", finished=time.time(), stage="finished", pid=None)
    except Stopped:
        return run.finish(state="stopped", finished=time.time(), stage="stopped", pid=None)
    except TransferLabError as exc:
        return _failed(run, str(exc))
    except Exception as exc:
        if (changed := changed_file_error(exc)) is not None:  # not a bug: a photo went bad
            return _failed(run, str(changed))
        failed_write = os_error_in(exc)
        if failed_write is not None:  # a full disk, a folder gone: no bug of ours, one line
            return _failed(run, write_failure(failed_write, run.folder, "training"))
        traceback.print_exc()  # a bug: keep the traceback in the log, a line in the status
        return _failed(run, f"{type(exc).__name__}: {exc}")


def _recommend(run: Run, config: TrainConfig, workspace, timer) -> TrainConfig:
    """Measure the recommended settings on the cached features and write them, with what was
    tried, into config.json before training with them."""
    manifest, cache = load_manifest(config.manifest), FeatureCache(workspace)

    def features(split):
        if not manifest.files(split)[0]:
            return None
        run.update_status(stage=f"extracting {split} features for the settings search")
        with timer("features"):
            found = cache.extract(manifest, split, feature_spec(config),
                                  should_stop=run.stop_requested)
        return found.features, found.labels

    train, validation = features("train"), features("validation")
    run.update_status(stage="measuring the recommended settings", progress=None)
    config = recommended_config(config, train, validation, len(manifest.classes))
    write_json_atomic(run.folder / "config.json", config.to_dict())
    return config


def _failed(run: Run, error: str) -> dict:
    return run.finish(state="failed", finished=time.time(), error=error, pid=None)


def _untimed(step: str):
    return contextlib.nullcontext()


class _Session:
    """One run's training: the model, the data, and the phases in order."""

    def __init__(self, run: Run, config: TrainConfig, workspace, callbacks, timer,
                 placement: Placement):
        self.run, self.config, self.workspace = run, config, workspace
        # Models and optimizers are made in its scope; extraction is not, so that each worker
        # reads or fills its own cache without waiting for the others.
        self.placement, self.scope = placement, placement.scope
        self.extra_callbacks, self.timer = list(callbacks), timer or _untimed  # train()'s hooks
        self.manifest = load_manifest(config.manifest)
        self.num_classes = len(self.manifest.classes)
        self.phases = training_phases(config)
        self.audits = []
        self.precision = self._choose_precision()

    def _choose_precision(self) -> str:
        """The base's precision for extraction, the view bank and the saved model (so for
        evaluation and prediction too), recorded in the status. The top that fine-tuning trains
        is not measured by "auto": it stays float32 unless bfloat16 was asked for."""
        if self.config.strategy == "from_scratch":  # no pretrained base to measure
            self.base_precision = "float32"
            self.run.update_status(precision={"precision": "float32", "asked":
                                              self.config.precision, "reason": "from scratch"})
            return "float32"
        self.run.update_status(stage="choosing the precision")
        paths, labels = self.manifest.files("train")
        chosen = resolve_precision(self.config.precision, self.config.backbone,
                                   self.config.weights, self.config.image_size,
                                   check_set(paths, labels), self.workspace)
        fine_tuned = self.config.strategy == "fine_tune" and self.config.precision == "auto"
        self.base_precision = "float32" if fine_tuned else chosen["precision"]
        self.run.update_status(precision={**chosen, "saved_model": self.base_precision})
        return chosen["precision"]

    def execute(self):
        if self.config.strategy == "from_scratch":
            return self._from_scratch()
        with building_in(self.base_precision), self.scope():
            base = build_base_for(self.config)
        if self.config.strategy == "fine_tune":
            layer_below(base, self.config.fine_tune_from)  # a bad boundary fails now, not later
        augment = self.config.strategy != "feature_extraction"
        with self.scope():
            head = build_head(base.output.shape[1:], self.num_classes, self.config)
            self.model = build_full_model(base, head, self.config, augment)
            self.saved_model = inference_model(base, head, self.config) if augment else self.model
        if self.config.standardize:  # before any fit: the head reads standardized features
            self._adapt_standardizer(head)
        self.base, self.head = base, head
        base.trainable = True
        tensors_unfrozen = len(self.model.trainable_weights)
        freeze_base(base)
        if self.config.strategy == "feature_extraction" or self.config.view_bank:
            self._train_on_cache(tensors_unfrozen)
        else:
            for phase in self.phases:
                self._phase(phase, self._fit_end_to_end, tensors_unfrozen)
        if not self.run.model_path.exists():  # no validation split: keep the last epoch
            save_model_atomic(self.saved_model, self.run.model_path)
            last = max((r["global_epoch"] for r in self.run.epochs()), default=None)
            self.run.update_status(saved_epoch=last)

    def _adapt_standardizer(self, head):
        """The head's means and variances from the training split's averaged base outputs
        (the cached, unaugmented ones: what the recommended search measured on)."""
        spec = feature_spec(self.config, 0, None, self.precision)
        found = self._features(FeatureCache(self.workspace), "train", spec)
        features = pooled(found.features)
        # A recommended linear head starts as the logistic regression the search chose, whose
        # scaler sets the same means and variances: adapting first would be a wasted pass.
        if not start_from_logistic(head, self.config, features, np.asarray(found.labels),
                                   self.num_classes):
            adapt_standardizer(head, features)

    def _from_scratch(self):
        """The chapter's convnet from random weights, augmented on the fly: nothing is frozen,
        so nothing can be cached (the audit says so: every layer trains)."""
        with self.scope():
            self.model, self.base, self.head = build_scratch_model(self.config, self.num_classes,
                                                                   augment=True)
            self.saved_model = scratch_inference_model(self.base, self.head, self.config)
        self._phase(self.phases[0], self._fit_end_to_end, len(self.model.trainable_weights))
        if not self.run.model_path.exists():  # no validation split: keep the last epoch
            save_model_atomic(self.saved_model, self.run.model_path)
            last = max((r["global_epoch"] for r in self.run.epochs()), default=None)
            self.run.update_status(saved_epoch=last)

    def _phase(self, phase: Phase, fit, tensors_unfrozen: int):
        if phase.unfreeze_from:
            unfreeze_from(self.base, phase.unfreeze_from)
        audit = phase_audit(self.model, self.base, phase.name)
        audit["trainable_weight_tensors_if_base_unfrozen"] = tensors_unfrozen
        self.audits.append(audit)
        self._write_audit()
        try:
            fit(phase)
        finally:
            check_frozen_unchanged(self.model, audit)
            self._write_audit()

    def _write_audit(self):
        note = {"note": NOTHING_FROZEN} if self.config.strategy == "from_scratch" else {}
        self.run.write_audit({"strategy": self.config.strategy, **note, "phases": [
            {k: v for k, v in a.items() if not k.endswith("_checksums_before")}
            | {"frozen_layer_checksums": a["frozen_checksums_before"]} for a in self.audits]})

    def _recorder(self, phase: Phase, steps: int) -> RunRecorder:
        return RunRecorder(self.run, self.saved_model, phase, steps, self.config.total_epochs,
                           self.config.monitor)

    def _callbacks(self, recorder):
        callbacks = [recorder]
        if self.config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(
                self.config.monitor, patience=self.config.early_stopping_patience))
        return callbacks + self.extra_callbacks

    def _train_on_cache(self, tensors_unfrozen: int):
        """Never compute a frozen layer twice: the frozen part of the base runs once per image
        (feature_extraction) or once per augmented view (the view bank), and only what trains
        runs every epoch: the head, or for fine_tune on the bank the top of the base and the
        head. fine_tune's second phase runs the base on the fly unless fine_tune_on_bank: its
        unfrozen top, trained on stored views, ended below on the fly's (TrainConfig)."""
        config = self.config
        boundary = bank_boundary(config.strategy, config.fine_tune_from,
                                 config.fine_tune_on_bank)
        with self.scope():
            self.trainer = cached_trainer(self.base, self.head, boundary)
            self.top = top_model(self.base, boundary) if boundary else None  # frozen in phase 1
        self.cut = layer_below(self.base, boundary) if boundary else None
        self.views = self._choose_views()
        for phase in self.phases:
            on_cache = phase.unfreeze_from is None or boundary is not None
            self._phase(phase, self._fit_on_cache if on_cache else self._fit_end_to_end,
                        tensors_unfrozen)

    def _choose_views(self) -> int:
        """The bank's K (view_bank "auto" resolved by bank.choose_views), recorded in the
        status. A bank already cached at the K wanted is used whatever the disk now has free:
        its space is taken already."""
        config = self.config
        if config.view_bank != "auto" or config.strategy == "feature_extraction":
            views, reason = choose_views(config, 0, 0)
        else:
            per_view, fixed = self._bank_bytes()
            cache = FeatureCache(self.workspace)
            views, reason = choose_views(config, per_view, math.inf)
            bank = feature_spec(config, views, self.cut, self.precision)
            if not cache.has(self.manifest, "train", bank):
                views, reason = choose_views(config, per_view,
                                             room_for_features(cache.root) - fixed)
        self.run.update_status(view_bank={"views": views, "asked": config.view_bank,
                                          "reason": reason})
        return views

    def _bank_bytes(self) -> tuple[int, int]:
        """(bytes one more view adds to the cache, bytes that do not grow with the views)."""
        shapes = {"output": self.base.output.shape[1:]}
        if self.cut:
            shapes["cut"] = self.base.get_layer(self.cut).output.shape[1:]
        n_train, n_val = (len(self.manifest.files(s)[0]) for s in ("train", "validation"))
        return bank_growth(shapes, self.cut and "cut", "output", n_train, n_val)

    def _fit_on_cache(self, phase: Phase):
        config, cache = self.config, FeatureCache(self.workspace)
        views = self.views if config.strategy != "feature_extraction" else 0
        cut = self.cut if phase.unfreeze_from else None  # head phase: the head alone trains
        trainer = self.trainer if cut else self.head
        train = self._cached(cache, "train", views, cut)
        val = self._cached(cache, "validation", 0, cut) if self._has("validation") else None
        data = ViewBank(train.features, self._labels(train.labels), max(views, 1),
                        config.batch_size, config.seed, phase.first_epoch,
                        blend_reach=config.blend_reach if cut else None)
        # Read in batches as Keras asks for them: the split never sits in memory whole.
        validation = (FeatureBatches(val.features, self._labels(val.labels), config.batch_size)
                      if val else None)
        recorder = self._recorder(phase, len(data))
        self.run.update_status(stage=phase.stage(on_cache=True), progress=None)
        with self.scope():
            # XLA fuses the optimizer's update of the head's large Flatten → Dense kernel, much
            # faster on a CPU; with layers of the base training too, its epochs were slower and
            # uneven: head only (docs/BENCHMARKS.md: "The head with XLA", "XLA for the top of
            # the base"). Not under tf.distribute, as Keras' "auto" decides too: XLA cannot
            # reach a variable mirrored on another device.
            compile_model(trainer, self.num_classes, phase.learning_rate,
                          jit_compile=(cut is None and self.placement.kind == "none") or "auto")
            # shuffle=False: the ViewBank orders each epoch from the seed; Keras' own shuffle
            # of its batches would draw on Python's global random state, which a strategy's
            # start-up moves, so one device and two would train on different orders.
            trainer.fit(**self._input(data, phase, len(data)), validation_data=validation,
                        epochs=phase.last_epoch, initial_epoch=phase.first_epoch,
                        shuffle=False, verbose=0, callbacks=self._callbacks(recorder))

    def _cached(self, cache, split: str, views: int, layer: str | None):
        """A split's features at `layer` (None: the base's output). A fine-tune run derives the
        base's output from its frozen-prefix features: the top is frozen in the head phase, so
        running it once per view gives what running it on every epoch would."""
        spec = feature_spec(self.config, views, layer, self.precision)
        if layer is not None or self.cut is None:
            return self._features(cache, split, spec)
        # Derived through the trained base's top, whose precision may differ from the prefix's:
        # the key names both then ("bfloat16/float32"), as neither extraction made these rows.
        both = (self.precision if self.precision == self.base_precision
                else f"{self.precision}/{self.base_precision}")
        spec = feature_spec(self.config, views, layer, both)
        prefix = self._features(cache, split,
                                feature_spec(self.config, views, self.cut, self.precision))
        return self._features(cache, split, spec, Derivation(prefix, self.top))

    def _features(self, cache, split, spec, derivation=None):
        views = f" ({spec.views} augmented views per image)" if spec.views else ""
        what = (f"running the frozen top of the base over the cached {split} features{views}"
                if derivation else f"extracting {split} features{views}")

        def progress(done, total):
            self.run.update_status(stage=what, progress={"done": done, "total": total,
                                                         "unit": "images"})

        with self.timer("features"):
            return cache.extract(self.manifest, split, spec, batch_size=32, progress=progress,
                                 should_stop=self.run.stop_requested, derivation=derivation)

    def _fit_end_to_end(self, phase: Phase):
        paths, labels = self.manifest.files("train")
        train = self._images(paths, labels, shuffle=True)
        validation = (self._images(*self.manifest.files("validation"))
                      if self._has("validation") else None)
        steps = math.ceil(len(paths) / self.config.batch_size)
        recorder = self._recorder(phase, steps)
        stage = ("training the convnet from scratch" if self.config.strategy == "from_scratch"
                 else phase.stage(on_cache=False))
        self.run.update_status(stage=stage, progress=None)
        with self.scope():
            compile_model(self.model, self.num_classes, phase.learning_rate)
            self.model.fit(**self._input(train, phase, steps), validation_data=validation,
                           epochs=phase.last_epoch, initial_epoch=phase.first_epoch,
                           shuffle=False, verbose=0, callbacks=self._callbacks(recorder))

    def _images(self, paths, labels, shuffle=False):
        data = image_dataset(paths, labels, self.config.image_size, self.config.batch_size,
                             shuffle=shuffle, seed=self.config.seed)
        if self.num_classes == 2:  # binary cross-entropy wants float targets
            data = data.map(lambda x, y: (x, keras.ops.cast(y, "float32")))
        return data

    def _input(self, data, phase: Phase, steps: int) -> dict:
        """fit()'s training data and class_weight, shared between workers when there are
        several (distribute.training_input)."""
        return training_input(self.placement, data, self._class_weight(), phase.epochs, steps)

    def _class_weight(self):
        """Keras turns it into per-photo weights for a PyDataset and a tf.data input alike."""
        labels = self.manifest.files("train")[1]
        return class_weights(labels, self.num_classes, self.config.class_weight)

    def _labels(self, labels):
        return np.asarray(labels, "float32" if self.num_classes == 2 else "int32")

    def _has(self, split):
        return bool(self.manifest.files(split)[0])


class ViewBank(keras.utils.PyDataset):
    """Batches of cached features for one epoch: every image once, in a new random order,
    through one of its K views. Image i's view in epoch e is (offset_i + e) mod K, with a
    random offset per image, so each image cycles through all its views every K epochs.
    With a `blend_reach` r, each image is instead λ·(that view) + (1 − λ)·(another of its
    views), λ uniform in [-r, 1 + r) and the other view drawn anew each epoch: an input never
    seen before, at the cost of a second read (r = 0 stays between the two views, r > 0 may
    go beyond them; TrainConfig.blend_reach, measured only). Each batch is read from the
    cache file as it is needed (feature_rows.RowReader)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, views: int, batch_size: int,
                 seed: int, first_epoch: int = 0, blend_reach: float | None = None):
        super().__init__()
        self.features, self.labels, self.views = RowReader(features), labels, views
        self.batch_size, self.seed = batch_size, seed
        self.blend_reach = blend_reach if views > 1 else None  # one view: nothing to blend
        self.images = len(labels)
        self.offsets = np.random.default_rng(seed).integers(0, views, self.images)
        self.epoch = first_epoch
        self._shuffle()

    def _shuffle(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.images)
        views = (self.offsets[order] + self.epoch) % self.views
        self.rows, self.targets = views * self.images + order, self.labels[order]
        if self.blend_reach is not None:  # another view of the same image, and its weight
            reach = self.blend_reach
            others = (views + rng.integers(1, self.views, self.images)) % self.views
            self.partners = others * self.images + order
            self.weights = rng.random(self.images, dtype=np.float32) * (1 + 2 * reach) - reach

    def __len__(self):
        return math.ceil(self.images / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        rows = self.rows[part]
        ordered = np.argsort(rows)  # ascending rows read the file sequentially
        features = self.features.take(rows[ordered])
        if self.blend_reach is not None:
            features = self._blend(features, self.partners[part][ordered],
                                   self.weights[part][ordered])
        return features, self.targets[part][ordered]

    def _blend(self, features, partners, weights):
        ordered = np.argsort(partners)
        others = np.empty_like(features)
        others[ordered] = self.features.take(partners[ordered])
        weights = weights.reshape(-1, *[1] * (features.ndim - 1))
        return weights * features + (1 - weights) * others

    def on_epoch_end(self):
        self.epoch += 1
        self._shuffle()


class RunRecorder(keras.callbacks.Callback):
    """Writes progress and epoch lines to the run, saves the best model, honours stop requests."""

    def __init__(self, run: Run, full_model, phase: Phase, steps: int, total_epochs: int,
                 monitor: str):
        super().__init__()
        self.run, self.full_model, self.phase = run, full_model, phase.name
        self.phase_number = phase.number
        self.offset, self.phase_epochs, self.steps = phase.first_epoch, phase.epochs, steps
        self.total_epochs, self.monitor = total_epochs, monitor
        self.every = max(1, steps // 25)
        self.best = (run.status().get("best") or {}).get(monitor)  # from an earlier phase
        self.started = time.time()
        self.last_write = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self._check_stop()
        now = time.time()
        if (batch + 1) % self.every and batch + 1 != self.steps or now - self.last_write < 0.5:
            return
        self.last_write = now
        logs = logs or {}
        epoch = getattr(self, "_epoch", self.offset)  # 0-based, counted over both phases
        done = epoch + (batch + 1) / self.steps
        record = {"type": "progress", "phase": self.phase, "epoch": epoch - self.offset + 1,
                  "global_epoch": epoch + 1, "batch": batch + 1, "batches": self.steps,
                  "loss": _num(logs.get("loss")), "accuracy": _num(logs.get("accuracy"))}
        self.run.log_metric(record)
        self.run.update_status(**self._progress(epoch, done))

    def on_test_batch_end(self, batch, logs=None):
        self._check_stop()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = {"type": "epoch", "phase": self.phase_number,
                  "phase_name": self.phase, "epoch": epoch - self.offset + 1,
                  "global_epoch": epoch + 1, "seconds": round(time.time() - self.epoch_started, 3)}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            record[key] = _num(logs.get(key))
        self.run.log_metric(record)
        # Batch progress is written at most twice a second, so the epoch's end always writes
        # its own: a fast last epoch must not leave the status one epoch behind.
        changes = self._progress(epoch, epoch + 1)
        value = record.get(self.monitor)
        if self._keeps(value):
            save_model_atomic(self.full_model, self.run.model_path)
            self.best = value
            # Recorded after the save: a run killed while saving names the epoch before.
            changes["best"] = {"global_epoch": epoch + 1, "val_loss": record["val_loss"],
                               "val_accuracy": record["val_accuracy"]}
            changes["saved_epoch"] = epoch + 1
        self.run.update_status(**changes)

    def _keeps(self, value) -> bool:
        """Whether this epoch's model replaces the one saved: every epoch's with "last" (the
        chapter's rule), else one that beats the best so far by the monitor."""
        if self.monitor == "last":
            return True
        return value is not None and (self.best is None
                                      or is_better(value, self.best, self.monitor))

    def _progress(self, epoch: int, done: float) -> dict:
        """The status fields of being `done` epochs in (fractional), inside 0-based `epoch`.
        The time left is this phase's, from its pace so far (None before any of it is done),
        and says so ("eta_scope"): a later phase runs at a pace of its own (fine_tune's head
        on cached features takes seconds an epoch, its fine-tuning on the fly a minute)."""
        own, phase_end = done - self.offset, self.offset + self.phase_epochs
        eta = (time.time() - self.started) / own * (phase_end - done) if own > 0 else None
        return dict(phase=self.phase, epoch=epoch - self.offset + 1,
                    phase_epochs=self.phase_epochs, global_epoch=epoch + 1,
                    total_epochs=self.total_epochs,
                    progress={"done": round(done, 3), "total": self.total_epochs,
                              "unit": "epochs", "eta_seconds": eta,
                              "eta_scope": "phase" if phase_end < self.total_epochs else "run"})

    def _check_stop(self):
        if self.run.stop_requested():
            raise Stopped()


def _num(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
