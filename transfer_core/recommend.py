"""Settings found by measurement on the user's data ("Recommended for this dataset"): the head's
input, its learning rate and its epoch count, from the cached features of the training and
validation splits only (the test split stays unseen).

The learning rate comes from a learning-rate range test (L. Smith, "Cyclical Learning Rates",
2017; fastai's `lr_find`): one short run of LR_STEPS batches whose rate grows exponentially
from LR_START to LR_END, recording the smoothed loss; the rate chosen is a tenth of the one
with the lowest loss (fastai's old rule: the minimum is already at the edge of divergence).
Each head input (Flatten, global average pooling) gets its own test, then trains at its rate
with early stopping (patience PATIENCE on the validation loss, at most MAX_EPOCHS); the input
with the lower best validation loss wins, and its best epoch sets the run's epochs. Average
pooling, cheap, goes first on features averaged once; the flatten head's fit, h × w times
dearer, stops as soon as it is behind at equal epochs (successive halving); on every run
measured an unscreened search chose the same (docs/BENCHMARKS.md). Class weights, when set,
weigh every step and the validation loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import keras
import numpy as np

from .balance import class_weights
from .errors import RunError
from .feature_rows import FeatureBatches, RowReader, pooled
from .runs import TrainConfig
from .strategies import build_head, compile_model

SETTINGS = ("chapter", "recommended")
POOLINGS = ("flatten", "avg")
LR_STEPS, LR_START, LR_END = 100, 1e-7, 1.0
PATIENCE, MAX_EPOCHS = 5, 50
SCREEN_EPOCHS = 3  # the flatten head's fit runs at least this long (see _BehindAtEqualEpochs)
STEPS_PER_EXECUTION = 32
VALIDATION_BATCH = 256  # validation only evaluates: large batches, the same loss
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
                  seed: int = 0, class_weight: dict | None = None) -> dict:
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
        loss = float(model.train_on_batch(reader.take(rows), y[rows], class_weight=class_weight,
                                          return_dict=True)["loss"])
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


def search_inputs(pooling: str, features) -> np.ndarray:
    """What the search's head for `pooling` reads: the features as they are for flatten; for
    average pooling, the features averaged over the image once, in NumPy, as (N, 1, 1, C): the
    head's GlobalAveragePooling2D is then the identity, the arithmetic the same as on the whole
    maps, and every epoch reads h × w times fewer numbers."""
    if pooling == "flatten":
        return features  # read in batches as the fits need them (feature_rows)
    means = pooled(features)
    return means.reshape(len(means), 1, 1, -1)


class _BehindAtEqualEpochs(keras.callbacks.Callback):
    """Successive halving's rule (Jamieson and Talwalkar, 2016) for two candidates: stop a fit
    once, from epoch `after` on, its best validation loss so far is above the rival's best
    over the same number of epochs. The rival, already fitted, then keeps the lower loss."""

    def __init__(self, rival_losses: list[float], after: int):
        super().__init__()
        self.rival, self.after, self.losses, self.stopped_after = rival_losses, after, [], None

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["val_loss"]))
        done = len(self.losses)
        if done >= self.after and min(self.losses) > min(self.rival[:done]):
            self.model.stop_training, self.stopped_after = True, done


def _validation_weights(y, weights):
    return None if weights is None else np.asarray([weights.get(int(label), 1.0) for label in y],
                                                    "float32")


def try_pooling(pooling: str, config: TrainConfig, train, validation, num_classes: int,
                rival: dict | None = None) -> dict:
    """One head input: its range test, then training at the chosen rate with early stopping
    (and, with a `rival` already tried, the stop of _BehindAtEqualEpochs). The features are
    read in batches, shuffled each epoch (a one-view ViewBank): never in memory whole."""
    from .training import ViewBank  # training imports this module

    config = replace(config, pooling=pooling)
    x = search_inputs(pooling, train[0])
    train = (x, train[1])
    validation = (search_inputs(pooling, validation[0]), validation[1])
    weights = class_weights(train[1], num_classes, config.class_weight)
    keras.utils.set_random_seed(config.seed)
    head = build_head(x.shape[1:], num_classes, config)
    # No XLA: on these short fits its compile time outweighed the speed (flatten head, 120
    # photos, 20 epochs: 22.8 s with, 14.5 s without, on the shared 2-core EPYC).
    compile_model(head, num_classes, LR_START, jit_compile=False)
    found = lr_range_test(head, *train, config.batch_size, seed=config.seed,
                          class_weight=weights)
    keras.utils.set_random_seed(config.seed)
    head = build_head(x.shape[1:], num_classes, config)
    # Several batches per call of the compiled step: a small head's step is shorter than
    # Keras' per-call overhead. The batches, their order and so the weights stay the same.
    compile_model(head, num_classes, found["chosen"], jit_compile=False,
                  steps_per_execution=STEPS_PER_EXECUTION)
    callbacks = [keras.callbacks.EarlyStopping("val_loss", patience=PATIENCE)]
    if rival is not None:
        callbacks.append(_BehindAtEqualEpochs(rival["val_losses"], SCREEN_EPOCHS))
    data = ViewBank(*train, 1, config.batch_size, config.seed)
    checks = FeatureBatches(*validation, VALIDATION_BATCH,
                            _validation_weights(validation[1], weights))
    history = head.fit(data, validation_data=checks, epochs=MAX_EPOCHS, class_weight=weights,
                       verbose=0, callbacks=callbacks).history
    best = int(np.argmin(history["val_loss"]))
    stopped = callbacks[-1].stopped_after if rival is not None else None
    return {"pooling": pooling, "learning_rate": found["chosen"],
            "range_test": {k: found[k] for k in ("rates", "losses")},
            "best_epoch": best + 1, "epochs_run": len(history["val_loss"]),
            "val_loss": float(history["val_loss"][best]),
            "val_accuracy": float(history["val_accuracy"][best]),
            "val_losses": [round(float(v), 5) for v in history["val_loss"]],
            "stopped_behind": stopped,
            "class_weight": weights and {str(k): w for k, w in weights.items()}}  # JSON's keys


def search(config: TrainConfig, train, validation, num_classes: int, screen: bool = True
           ) -> dict:
    """What was tried and what was chosen, from (features, labels) of train and validation.
    The cheap input (average pooling) is fitted first; the flatten head, whose fit costs
    h × w times more, stops as soon as it is behind at equal epochs (SCREEN_EPOCHS on), unless
    `screen` is False (both fits run to early stopping: how bench/ checks the screen)."""
    started, cpu = time.perf_counter(), time.process_time()
    train = (train[0], _labels(train[1], num_classes))  # features stay on disk, if cached
    validation = (validation[0], _labels(validation[1], num_classes))
    average = try_pooling("avg", config, train, validation, num_classes)
    flatten = try_pooling("flatten", config, train, validation, num_classes,
                          rival=average if screen else None)
    tried = [flatten, average]  # in POOLINGS' order
    chosen = min(tried, key=lambda t: t["val_loss"])
    return {"tried": tried, "chosen": {
        "pooling": chosen["pooling"], "learning_rate": chosen["learning_rate"],
        "epochs": chosen["best_epoch"] + PATIENCE, "early_stopping_patience": PATIENCE,
        "monitor": "val_loss"},
        "rule": {"learning_rate": f"range test, {LR_STEPS} batches from {LR_START:g} to "
                                  f"{LR_END:g}: {RULE}",
                 "pooling": f"the lower best validation loss; the flatten head's fit stops "
                            f"from epoch {SCREEN_EPOCHS} on once its best is above average "
                            f"pooling's over as many epochs",
                 "epochs": f"the chosen input's best epoch + the patience ({PATIENCE}); "
                           f"early stopping on the validation loss keeps the best epoch"},
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2)}  # of this process: all its threads


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


def _stopped_text(tried: dict) -> str:
    if not tried.get("stopped_behind"):
        return ""
    return (f" (stopped after {tried['stopped_behind']} epochs: behind the other input's best "
            "over as many epochs)")


def recommendation_lines(recommendation: dict) -> list[str]:
    """What was tried and what was chosen, in words, for the Curves page."""
    chosen, rule = recommendation["chosen"], recommendation["rule"]
    lines = [f"{t['pooling']}: rate {t['learning_rate']:.1e}, best epoch {t['best_epoch']} of "
             f"{t['epochs_run']}, validation loss {t['val_loss']:.4f}, accuracy "
             f"{100 * t['val_accuracy']:.1f}%" + _stopped_text(t) for t in recommendation["tried"]]
    lines.append(f"Chosen: {chosen['pooling']} at {chosen['learning_rate']:.1e} for at most "
                 f"{chosen['epochs']} epochs, early stopping with patience "
                 f"{chosen['early_stopping_patience']} ({recommendation['seconds']:.0f} s of "
                 f"search). Rules: rate, {rule['learning_rate']}; input, {rule['pooling']}; "
                 f"epochs, {rule['epochs']}.")
    return lines
