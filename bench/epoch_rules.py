"""Every model-selection rule from one run: the test accuracy of the epoch each rule would keep.

A run keeps one epoch (TrainConfig.monitor); which rule to make the default is a measurement
(issue 15). `EpochSnapshots`, given to `training.train(callbacks=...)`, copies the weights of
every layer that trains at each epoch's end (and of every weighted layer when a fit begins, so
a layer frozen in one phase and trained in the next is known before it changed). Afterwards
`rule_accuracies` loads the run's saved model, sets the weights of each epoch some rule picks
(by layer name, nested models included) and predicts the test split with the product's own
prediction code.

Rules: min val_loss, max val_accuracy (the first epoch reaching the best, as RunRecorder keeps
it) and last; scopes: the head phase only (for fine_tune: what feature_extraction_augmented
with the same settings would keep) and all epochs.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from transfer_core.datasets import load_manifest
from transfer_core.evaluation import _predict_all, summarize
from transfer_core.predict import load_run_model
from transfer_core.runs import Run

RULES = ("min_val_loss", "max_val_accuracy", "last")
SCOPES = ("head", "all")
SKIPPED_MODELS = ("augmentation",)  # random layers, absent from the saved model


def weighted_layers(model):
    """Every layer with weights, nested models flattened (their own layers, not themselves);
    the augmentation pipeline is skipped: it is not part of what a run saves."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            if layer.name not in SKIPPED_MODELS:
                yield from weighted_layers(layer)
        elif layer.weights:
            yield layer


class EpochSnapshots(keras.callbacks.Callback):
    """Measurement only: the weights of the model being fitted, in RAM, by layer name.

    `events` is a list of (kind, global epoch or None, {layer name: [arrays]}): "begin" when a
    fit starts (every weighted layer), "epoch" at each epoch's end (the layers that train).
    `seconds` is the time spent copying, to take out of a measured wall time."""

    def __init__(self):
        super().__init__()
        self.events, self.seconds = [], 0.0

    def _copy(self, trainable_only: bool) -> dict:
        started = time.perf_counter()
        copied = {layer.name: [np.array(w) for w in layer.get_weights()]
                  for layer in weighted_layers(self.model)
                  if layer.trainable or not trainable_only}
        self.seconds += time.perf_counter() - started
        return copied

    def on_train_begin(self, logs=None):
        self.events.append(("begin", None, self._copy(trainable_only=False)))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch", epoch + 1, self._copy(trainable_only=True)))

    def weights_at(self, global_epoch: int) -> dict:
        """Each snapshotted layer's weights as they were at the end of `global_epoch`. A layer
        first seen in a later fit had not trained yet: its first copy (at that fit's begin)
        is its value then too; a layer never copied never trained (the saved model has it)."""
        if global_epoch not in [e for k, e, _ in self.events if k == "epoch"]:
            raise ValueError(f"no snapshot of epoch {global_epoch}")
        weights, later, past = {}, {}, False
        for kind, epoch, layers in self.events:
            past = past or (kind == "epoch" and epoch > global_epoch)
            if past:
                for name, arrays in layers.items():
                    later.setdefault(name, arrays)
            else:
                weights.update(layers)
        return {**{n: a for n, a in later.items() if n not in weights}, **weights}


def picks(epochs: list[dict]) -> dict:
    """{"<rule>/<scope>": global epoch} for every rule and scope the run's epochs allow."""
    chosen = {}
    for scope in SCOPES:
        mine = [e for e in epochs if scope == "all" or e["phase_name"] == "head"]
        if not mine:
            continue
        with_loss = [e for e in mine if e.get("val_loss") is not None]
        if with_loss:  # min()/max() return the first of equals: RunRecorder keeps the first
            chosen[f"min_val_loss/{scope}"] = min(with_loss, key=lambda e: e["val_loss"])
            chosen[f"max_val_accuracy/{scope}"] = max(with_loss,
                                                      key=lambda e: e["val_accuracy"])
        chosen[f"last/{scope}"] = mine[-1]
    return {key: e["global_epoch"] for key, e in chosen.items()}


def set_weights(model, weights: dict) -> None:
    """Put `weights` (by layer name) into `model`; every name must be found, every shape match."""
    layers = {layer.name: layer for layer in weighted_layers(model)}
    missing = sorted(set(weights) - set(layers))
    if missing:
        raise ValueError(f"layers not in the saved model: {missing[:5]}")
    for name, arrays in weights.items():
        shapes = [tuple(w.shape) for w in layers[name].weights]
        if shapes != [a.shape for a in arrays]:
            raise ValueError(f"layer {name}: shapes {shapes} against {[a.shape for a in arrays]}")
        layers[name].set_weights(arrays)


def scores(model, run: Run, split: str = "test", batch_size: int = 32) -> dict:
    """Accuracy and loss on `split` as evaluate() computes them (its own code)."""
    paths, labels = load_manifest(run.config.manifest).files(split)
    probs = _predict_all(model, paths, run.config.image_size, batch_size, None)
    result = summarize(probs, np.asarray(labels), run.config.classes, paths)
    return {"accuracy": result["accuracy"], "loss": result["loss"]}


def rule_accuracies(run: Run, snapshots: EpochSnapshots, split: str = "test") -> dict:
    """For each rule and scope: the epoch it keeps, its validation figures and its accuracy on
    `split`, each epoch predicted once; plus the seconds this took (not part of the run)."""
    started = time.perf_counter()
    epochs = {e["global_epoch"]: e for e in run.epochs()}
    chosen = picks(list(epochs.values()))
    model = load_run_model(run)
    accuracy = {}
    for epoch in sorted(set(chosen.values())):
        set_weights(model, snapshots.weights_at(epoch))
        accuracy[epoch] = scores(model, run, split)
    rules = {key: {"global_epoch": epoch, "phase": epochs[epoch]["phase_name"],
                   "val_loss": epochs[epoch]["val_loss"],
                   "val_accuracy": epochs[epoch]["val_accuracy"],
                   "test_accuracy": accuracy[epoch]["accuracy"],
                   "test_loss": accuracy[epoch]["loss"]}
             for key, epoch in chosen.items()}
    return {"rules": rules, "seconds": round(time.perf_counter() - started, 1)}


def replay_validation(run: Run, snapshots: EpochSnapshots) -> list[dict]:
    """A check of the snapshots (tiny runs only: it predicts every epoch): each epoch's
    restored weights on the validation split against what fit() logged for that epoch."""
    model = load_run_model(run)
    rows = []
    for epoch in run.epochs():
        set_weights(model, snapshots.weights_at(epoch["global_epoch"]))
        replayed = scores(model, run, "validation")
        rows.append({"global_epoch": epoch["global_epoch"], "phase": epoch["phase_name"],
                     "logged_val_accuracy": epoch["val_accuracy"],
                     "replayed_val_accuracy": replayed["accuracy"],
                     "logged_val_loss": epoch["val_loss"], "replayed_val_loss": replayed["loss"]})
    return rows
