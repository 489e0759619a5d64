"""Settings found by measurement on the user's data ("Recommended for this dataset"): the head's
input, its learning rate and its epoch count, from the cached features of the training and
validation splits only (the test split stays unseen).

The learning rate comes from a learning-rate range test (L. Smith, "Cyclical Learning Rates",
2017; fastai's `lr_find`): one short run of LR_STEPS batches whose rate grows exponentially
from LR_START to LR_END, recording the smoothed loss; the rate chosen is a tenth of the one
with the lowest loss (fastai's old rule: the minimum is already at the edge of divergence).
Each head input (Flatten, global average pooling) gets its own test, then trains at its rate
with early stopping (patience PATIENCE on the validation loss, at most MAX_EPOCHS); the input
with the lower best validation loss wins, and its best epoch sets the run's epochs.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import keras
import numpy as np

from .errors import RunError
from .feature_rows import FeatureBatches, RowReader
from .runs import TrainConfig
from .strategies import build_head, compile_model

SETTINGS = ("chapter", "recommended")
POOLINGS = ("flatten", "avg")
LR_STEPS, LR_START, LR_END = 100, 1e-7, 1.0
PATIENCE, MAX_EPOCHS = 5, 50
SMOOTHING = 0.9  # the exponential moving average of the loss, debiased (as fastai)
DIVERGED = 4.0  # stop the range test once the smoothed loss is this many times its minimum
RULE = "a tenth of the rate with the lowest smoothed loss"


def default_settings(manifest) -> tuple[str, str]:
    """("chapter" or "recommended", why): the chapter's presets keep the chapter's settings,
    the lesson being taught; any other split gets settings measured on it."""
    preset = (manifest.request or {}).get("preset")
    if preset in ("chapter", "book"):
        return "chapter", (f"the split is the chapter's preset ({preset}): its settings are "
                           "the lesson being taught")
    return "recommended", ("this is not the chapter's split: the chapter's settings were tuned "
                           "for VGG16 on 4,000 photos, so settings are measured on this one")


def lr_range_test(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
                  steps: int = LR_STEPS, start: float = LR_START, end: float = LR_END,
                  seed: int = 0) -> dict:
    """Train `model` (compiled) for `steps` batches, the rate growing exponentially from
    `start` to `end`; the rates tried, their smoothed losses and the rate chosen (RULE).
    The batches cycle through a shuffled `x` when it holds fewer than `steps` batches; each
    is read from `x` as it is needed (a cached split is never in memory whole)."""
    reader = RowReader(x)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x))
                            for _ in range(math.ceil(steps * batch_size / len(x)))])
    factor = (end / start) ** (1 / max(steps - 1, 1))
    rates, losses, average, best = [], [], 0.0, math.inf
    for step in range(steps):
        rate = start * factor ** step
        model.optimizer.learning_rate.assign(rate)
        rows = order[step * batch_size:(step + 1) * batch_size]
        loss = float(model.train_on_batch(reader.take(rows), y[rows], return_dict=True)["loss"])
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(smoothed) or (step > 0 and smoothed > DIVERGED * best):
            break
        best = min(best, smoothed)
        rates.append(rate)
        losses.append(smoothed)
    return {"rates": rates, "losses": losses, "chosen": choose_rate(rates, losses),
            "rule": RULE}


def choose_rate(rates: list[float], losses: list[float]) -> float:
    """RULE: the minimum-loss rate over 10."""
    return float(rates[int(np.argmin(losses))] / 10)


def _labels(y, num_classes):
    return np.asarray(y, "float32" if num_classes == 2 else "int32")


def try_pooling(pooling: str, config: TrainConfig, train, validation, num_classes: int) -> dict:
    """One head input: its range test, then training at the chosen rate with early stopping.
    The features are read in batches, shuffled each epoch (a one-view ViewBank)."""
    from .training import ViewBank  # training imports this module

    config = replace(config, pooling=pooling)
    keras.utils.set_random_seed(config.seed)
    head = build_head(train[0].shape[1:], num_classes, config)
    # No XLA: on these short fits its compile time outweighed the speed (flatten head, 120
    # photos, 20 epochs: 22.8 s with, 14.5 s without, on the shared 2-core EPYC).
    compile_model(head, num_classes, LR_START, jit_compile=False)
    found = lr_range_test(head, *train, config.batch_size, seed=config.seed)
    keras.utils.set_random_seed(config.seed)
    head = build_head(train[0].shape[1:], num_classes, config)
    compile_model(head, num_classes, found["chosen"], jit_compile=False)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=PATIENCE)
    data = ViewBank(*train, 1, config.batch_size, config.seed)
    history = head.fit(data, validation_data=FeatureBatches(*validation, config.batch_size),
                       epochs=MAX_EPOCHS, verbose=0, callbacks=[stop]).history
    best = int(np.argmin(history["val_loss"]))
    return {"pooling": pooling, "learning_rate": found["chosen"],
            "range_test": {k: found[k] for k in ("rates", "losses")},
            "best_epoch": best + 1, "epochs_run": len(history["val_loss"]),
            "val_loss": float(history["val_loss"][best]),
            "val_accuracy": float(history["val_accuracy"][best])}


def search(config: TrainConfig, train, validation, num_classes: int) -> dict:
    """What was tried and what was chosen, from (features, labels) of train and validation."""
    started = time.perf_counter()
    train = (train[0], _labels(train[1], num_classes))  # features stay on disk, if cached
    validation = (validation[0], _labels(validation[1], num_classes))
    tried = [try_pooling(p, config, train, validation, num_classes) for p in POOLINGS]
    chosen = min(tried, key=lambda t: t["val_loss"])
    return {"tried": tried, "chosen": {
        "pooling": chosen["pooling"], "learning_rate": chosen["learning_rate"],
        "epochs": chosen["best_epoch"] + PATIENCE, "early_stopping_patience": PATIENCE,
        "monitor": "val_loss"},
        "rule": {"learning_rate": f"range test, {LR_STEPS} batches from {LR_START:g} to "
                                  f"{LR_END:g}: {RULE}",
                 "pooling": "the lower best validation loss",
                 "epochs": f"the chosen input's best epoch + the patience ({PATIENCE}); "
                           f"early stopping on the validation loss keeps the best epoch"},
        "seconds": round(time.perf_counter() - started, 2)}


def recommended_config(config: TrainConfig, train, validation, num_classes: int) -> TrainConfig:
    """`config` with the searched settings in place and the search recorded in it."""
    if validation is None:
        raise RunError("Recommended settings are measured on the validation split, and this "
                       "split has none: make a split with validation images, or use the "
                       "chapter's settings.")
    found = search(config, train, validation, num_classes)
    return replace(config, **found["chosen"], recommendation=found)


def range_test_figure(recommendation: dict):
    """The range test of each head input tried: smoothed loss against the rate (log scale),
    the chosen rate marked."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for tried in recommendation["tried"]:
        curve = tried["range_test"]
        figure.add_trace(go.Scatter(x=curve["rates"], y=curve["losses"], mode="lines",
                                    name=f"{tried['pooling']}: smoothed loss"))
        # The chosen rate is a tenth of the minimum, between the sweep's points: interpolate.
        at = float(np.interp(np.log(tried["learning_rate"]), np.log(curve["rates"]),
                             curve["losses"]))
        rate = tried["learning_rate"]
        figure.add_trace(go.Scatter(x=[rate], y=[at], mode="markers", marker_symbol="star",
                                    marker_size=12, name=f"{tried['pooling']}: chosen {rate:.1e}"))
    figure.update_layout(title="Learning-rate range test", xaxis_type="log",
                         xaxis_title="learning rate", yaxis_title="training loss (smoothed)",
                         height=320, margin=dict(t=40, l=0, r=0, b=0))
    return figure


def recommendation_lines(recommendation: dict) -> list[str]:
    """What was tried and what was chosen, in words, for the Curves page."""
    chosen, rule = recommendation["chosen"], recommendation["rule"]
    lines = [f"{t['pooling']}: rate {t['learning_rate']:.1e}, best epoch {t['best_epoch']} of "
             f"{t['epochs_run']}, validation loss {t['val_loss']:.4f}, accuracy "
             f"{100 * t['val_accuracy']:.1f}%" for t in recommendation["tried"]]
    lines.append(f"Chosen: {chosen['pooling']} at {chosen['learning_rate']:.1e} for at most "
                 f"{chosen['epochs']} epochs, early stopping with patience "
                 f"{chosen['early_stopping_patience']} ({recommendation['seconds']:.0f} s of "
                 f"search). Rules: rate, {rule['learning_rate']}; input, {rule['pooling']}; "
                 f"epochs, {rule['epochs']}.")
    return lines
