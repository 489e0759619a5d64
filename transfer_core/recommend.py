"""Settings found by measurement on the user's data ("Recommended for this dataset"): the head,
its input, its learning rate and its epoch count, from the cached features of the training and
validation splits only (the test split stays unseen).

The learning rate comes from a learning-rate range test (L. Smith, "Cyclical Learning Rates",
2017; fastai's `lr_find`): one short run of LR_STEPS batches whose rate grows exponentially
from LR_START to LR_END, recording the smoothed loss; the rate chosen is a tenth of the one
with the lowest loss (fastai's old rule: the minimum is already at the edge of divergence).
The candidates: a linear head on the averaged, standardized features that IS the logistic
regression the report's baseline fits (scikit-learn, C chosen on validation; its scaler and
coefficients set into the head, so nothing is left to train: on small sets the chapter's
hidden layer overfits where a logistic regression does not, and a Keras fit of the same head
stopped short of scikit-learn's optimum, round 4); the chapter's hidden layer on the averaged
or the flattened features, each with its own range test, trained at its rate with early
stopping (patience PATIENCE on the validation loss, at most MAX_EPOCHS); and the chapter's own
settings, fitted whole (its last epoch, as its runs keep) when they cost little enough
(CHAPTER_BUDGET). The linear head, the simplest and the report's baseline, is the reference:
another head replaces it only if it is more accurate on validation at its best epoch AND
McNemar's exact test on the validation photos the two score differently finds the gain unlikely
to be chance (p < SIGNIFICANCE; Dietterich, "Approximate statistical tests for comparing
supervised classification learning algorithms", 1998): on 40 validation photos a 4-photo gain
is within chance, and the chapter's settings chosen by one such gain tested 4 photos worse
(docs/BENCHMARKS.md, rounds 4b and 5). Among those that pass, the most accurate wins, ties
going to the lower validation cross-entropy: accuracy is what the user reads and what the
logistic regression's C is chosen on, and the cross-entropy misjudged a strongly decayed linear
head, accurate but underconfident (round 4). Its best epoch sets the run's epochs. The cheap heads
go first, on features averaged once; each later fit stops as soon as its validation loss is
behind the best head's at equal epochs (successive halving; the loss, smooth, where accuracy on
a validation split of 40 photos moves in 2.5-point steps). Class weights, when set, weigh every
step and the validation loss.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import keras
import numpy as np

from .balance import class_weights
from .errors import RunError
from .feature_rows import FeatureBatches, RowReader, pooled
from .predict import two_columns
from .runs import TrainConfig
from .strategies import adapt_standardizer, build_head, compile_model

SETTINGS = ("chapter", "recommended")
# Fitted in this order, cheapest first: a linear head on the averaged features, the chapter's
# hidden layer on them, the chapter's hidden layer on the flattened maps (h × w times dearer).
HEADS = ("linear", "avg", "flatten")
LR_STEPS, LR_START, LR_END = 100, 1e-7, 1.0
PATIENCE, MAX_EPOCHS = 5, 50
# A head fitted after another runs at least this many epochs (see _BehindAtEqualEpochs); the
# flatten head, whose epoch costs h × w times more, is judged sooner, as successive halving
# gives dearer arms smaller budgets: with 1,000 photos its range test and 3 epochs took 12 of
# the search's 21 s CPU (docs/BENCHMARKS.md, round 4). Last fitted, it can only lose by this.
SCREEN_EPOCHS, FLATTEN_SCREEN_EPOCHS = 3, 2
STEPS_PER_EXECUTION = 32
# The linear head is scikit-learn's solution as it stands; its run still has one epoch (the
# epoch line and curves the pages read), at a rate too small to move it: RMSprop's steps are
# at most a few times the rate, about 1e-6 in all against coefficients of about 1e-2.
KEEP_RATE, KEEP_EPOCHS = 1e-7, 1
# The chapter's settings as a candidate: flatten → Dense 256, RMSprop 2e-5, 30 epochs, the last
# kept. Fitted only when its 30 epochs read at most this many feature values (photos × values
# per photo × epochs): MobileNetV2 at 160 px, 5 × 5 × 1280 a photo, up to 208 training photos
# (about 15 s CPU on the shared 2-core EPYC); beyond, skipped and the reason recorded. Never
# screened: at 2e-5 its first epochs are far behind where its 30th ends.
CHAPTER_BUDGET = 2e8
# Another head replaces the linear one only when McNemar's exact test gives its gain on the
# validation photos a p-value below this: the usual 5%, the level Dietterich (1998) tested it
# at. Fixed before the test split is seen; on 40 photos it needs at least 6 photos gained to
# none lost (p = 0.031), where 4 to none is p = 0.125.
SIGNIFICANCE = 0.05
VALIDATION_BATCH = 256  # validation only evaluates: large batches, the same loss
SMOOTHING = 0.9  # the exponential moving average of the loss, debiased (as fastai)
DIVERGED = 4.0  # stop the range test once the smoothed loss is this many times its minimum
RULE = "a tenth of the rate with the lowest smoothed loss"
RULES = {
    "learning_rate": f"range test, {LR_STEPS} batches from {LR_START:g} to {LR_END:g}: {RULE}",
    "head": "the linear head, unless another is more accurate on validation at its best "
            "epoch (the chapter's settings: their last) and McNemar's exact test on the "
            f"validation photos the two score differently gives p < {SIGNIFICANCE:g} "
            "(Dietterich 1998); of those, the most accurate, ties by the lower validation "
            "cross-entropy (without weight decay's penalty); the hidden-layer heads stop "
            f"from epoch {SCREEN_EPOCHS} on ({FLATTEN_SCREEN_EPOCHS} for flatten) once their best "
            "cross-entropy is above the best head's over as many epochs; the chapter's "
            f"settings are fitted when their {TrainConfig.epochs} epochs read at most "
            f"{CHAPTER_BUDGET:.0e} feature values",
    "weight_decay": "the linear head is the logistic regression: C chosen on validation "
                    "(accuracy, ties by log loss), its weight decay 1 / (2 C N); it starts "
                    f"from scikit-learn's solution and runs {KEEP_EPOCHS} epoch at "
                    f"{KEEP_RATE:g}, which leaves it as it is",
    "epochs": f"the chosen head's best epoch + the patience ({PATIENCE}); early stopping on "
              "the validation loss keeps the best epoch"}


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
    """Each epoch's validation cross-entropy, the loss without weight decay's penalty (Keras
    adds the penalty to val_loss; heads with and without decay are compared on the loss
    itself), and successive halving's rule (Jamieson and Talwalkar, 2016): with `rival_losses`
    given, stop the fit once, from epoch `after` on, its best so far is above the rival's best
    over the same number of epochs. The rival, already fitted, then keeps the lower loss."""

    def __init__(self, rival_losses: list[float] | None, after: int):
        super().__init__()
        self.rival, self.after, self.losses, self.stopped_after = rival_losses, after, [], None

    def on_epoch_end(self, epoch, logs=None):
        penalty = sum(float(loss) for loss in self.model.losses)  # at the weights just scored
        self.losses.append(float(logs["val_loss"]) - penalty)
        done = len(self.losses)
        if (self.rival is not None and done >= self.after
                and min(self.losses) > min(self.rival[:done])):
            self.model.stop_training, self.stopped_after = True, done


def _validation_batches(validation, weights) -> FeatureBatches:
    """The validation split read in large batches, each photo weighed as in training."""
    y = validation[1]
    sample_weights = (None if weights is None else
                      np.asarray([weights.get(int(label), 1.0) for label in y], "float32"))
    return FeatureBatches(*validation, VALIDATION_BATCH, sample_weights)


def _json_weights(weights: dict | None) -> dict | None:
    """Class weights as a config records them: JSON's keys are strings."""
    return weights and {str(k): w for k, w in weights.items()}


def head_settings(head: str, config: TrainConfig, weight_decay: float) -> dict:
    """The settings each candidate head changes. "linear": average pooling → standardize →
    output with `weight_decay`, no dropout (a logistic regression in the head); "avg" and
    "flatten": the chapter's hidden layer and dropout on either input."""
    if head == "linear":
        return {"pooling": "avg", "dense_units": 0, "dropout": 0.0, "standardize": True,
                "weight_decay": weight_decay}
    return {"pooling": head, "dense_units": config.dense_units or TrainConfig.dense_units,
            "dropout": config.dropout, "standardize": False, "weight_decay": 0.0}


def choose_weight_decay(train: tuple, validation: tuple, seed: int,
                        class_weight: dict | None = None) -> dict:
    """The linear head's L2 factor as the logistic regression's C is chosen (baseline.py: the
    C grid, by validation accuracy, ties by log loss), on the same averaged, standardized
    features. scikit-learn minimises C · Σ loss + ½‖w‖², that is mean loss + ‖w‖² / (2 C N):
    Keras' L2 factor is 1 / (2 C N)."""
    from .baseline import fit_baseline  # scikit-learn: imported when a search runs

    started = time.process_time()
    model, tried = fit_baseline(train, validation, seed=seed, class_weight=class_weight)
    c = float(model[-1].C)
    return {"C": c, "weight_decay": 1 / (2 * c * len(train[1])), "tried": tried,
            "class_weight": _json_weights(class_weight),
            "val_correct": model.predict(validation[0]) == validation[1],
            "cpu_seconds": round(time.process_time() - started, 2)}


def _fresh_head(config: TrainConfig, x, num_classes: int) -> keras.Model:
    """A candidate head as seeded (the same weights whenever it is built), standardizer
    adapted on the features it reads."""
    keras.utils.set_random_seed(config.seed)
    model = build_head(x.shape[1:], num_classes, config)
    adapt_standardizer(model, x.reshape(len(x), -1) if config.standardize else None)
    return model


def head_range_test(config: TrainConfig, train, num_classes: int) -> dict:
    """The range test of the head `config` describes, on what it reads (`train`), with the
    process CPU time it took (another thread's too, while one runs)."""
    started = time.process_time()
    model = _fresh_head(config, train[0], num_classes)
    # No XLA: on these short fits its compile time outweighed the speed (flatten head, 120
    # photos, 20 epochs: 22.8 s with, 14.5 s without, on the shared 2-core EPYC).
    compile_model(model, num_classes, LR_START, jit_compile=False)
    found = lr_range_test(model, *train, config.batch_size, seed=config.seed,
                          class_weight=class_weights(train[1], num_classes, config.class_weight))
    return {**found, "cpu_seconds": time.process_time() - started}


def try_head(head: str, config: TrainConfig, train, validation, num_classes: int,
             rival: dict | None = None, found: dict | None = None) -> dict:
    """One candidate head (`config` holds its settings, head_settings): its range test (or
    `found`, one already run), then training at the chosen rate with early stopping on the
    validation loss (and, with a `rival` already tried, the stop of _BehindAtEqualEpochs).
    `train` and `validation` are what its input reads (search_inputs); the flatten features
    are read in batches, shuffled each epoch (a one-view ViewBank): never in memory whole."""
    from .training import ViewBank  # training imports this module

    weights = class_weights(train[1], num_classes, config.class_weight)
    found = found or head_range_test(config, train, num_classes)
    started = time.process_time() - found["cpu_seconds"]  # the head's range test and fit
    head_model = _fresh_head(config, train[0], num_classes)
    # Several batches per call of the compiled step: a small head's step is shorter than
    # Keras' per-call overhead. The batches, their order and so the weights stay the same.
    compile_model(head_model, num_classes, found["chosen"], jit_compile=False,
                  steps_per_execution=STEPS_PER_EXECUTION)
    after = FLATTEN_SCREEN_EPOCHS if config.pooling == "flatten" else SCREEN_EPOCHS
    scores = _BehindAtEqualEpochs(rival and rival["val_losses"], after)
    # The best epoch's weights restored at the end, to tell which validation photos it gets
    # right (McNemar's test against the linear head), whichever rule stopped the fit.
    callbacks = [keras.callbacks.EarlyStopping("val_loss", patience=PATIENCE,
                                               restore_best_weights=True), scores]
    data = ViewBank(*train, 1, config.batch_size, config.seed)
    checks = _validation_batches(validation, weights)
    history = head_model.fit(data, validation_data=checks, epochs=MAX_EPOCHS,
                             class_weight=weights, verbose=0, callbacks=callbacks).history
    best = int(np.argmin(history["val_loss"]))  # the epoch the run's early stopping keeps
    return {"head": head, "pooling": config.pooling, "dense_units": config.dense_units,
            "standardize": config.standardize, "weight_decay": config.weight_decay,
            "learning_rate": found["chosen"],
            "range_test": {k: found[k] for k in ("rates", "losses")},
            "best_epoch": best + 1, "epochs_run": len(history["val_loss"]),
            "val_loss": scores.losses[best],
            "val_accuracy": float(history["val_accuracy"][best]),
            "val_losses": [round(v, 5) for v in scores.losses],
            "stopped_behind": scores.stopped_after,
            "val_correct": correct_photos(head_model, validation),
            "cpu_seconds": round(time.process_time() - started, 2),
            "class_weight": _json_weights(weights)}


def correct_photos(model: keras.Model, validation) -> np.ndarray:
    """Which validation photos `model` gets right, a boolean per photo (McNemar's test reads
    them; the record keeps only their counts)."""
    probabilities = model.predict(FeatureBatches(*validation, VALIDATION_BATCH), verbose=0)
    return two_columns(probabilities).argmax(axis=1) == np.asarray(validation[1]).astype(int)


def logistic_candidate(decay: dict) -> dict:
    """The linear head as the search scores it: the logistic regression at the C chosen, its
    validation accuracy and log loss (the head starts as it, start_from_logistic)."""
    scored = next(t for t in decay["tried"] if t["C"] == decay["C"])
    return {"head": "linear", "pooling": "avg", "dense_units": 0, "standardize": True,
            "weight_decay": decay["weight_decay"], "learning_rate": KEEP_RATE,
            "start": "logistic regression", "range_test": None, "best_epoch": KEEP_EPOCHS,
            "epochs_run": KEEP_EPOCHS, "val_loss": scored["val_loss"],
            "val_accuracy": scored["val_accuracy"], "val_losses": [scored["val_loss"]],
            "stopped_behind": None, "cpu_seconds": decay["cpu_seconds"],
            "class_weight": decay.get("class_weight")}


def chapter_settings() -> dict:
    """The chapter's head and training, the TrainConfig defaults, as settings to choose."""
    return {"pooling": "flatten", "dense_units": TrainConfig.dense_units,
            "dropout": TrainConfig.dropout, "standardize": False, "weight_decay": 0.0,
            "learning_rate": TrainConfig.learning_rate, "epochs": TrainConfig.epochs,
            "early_stopping_patience": None, "monitor": "last"}


def chapter_cost(train_features) -> float:
    """Feature values the chapter candidate's epochs read (CHAPTER_BUDGET)."""
    return float(len(train_features) * math.prod(train_features.shape[1:]) * TrainConfig.epochs)


def try_chapter(config: TrainConfig, train, validation, num_classes: int) -> dict:
    """The chapter's settings on the flattened features (`train`, `validation`): all their
    epochs, scored on validation once, at the last (the epoch their runs keep)."""
    from .training import ViewBank  # training imports this module

    started = time.process_time()
    config = replace(config, **chapter_settings())
    weights = class_weights(train[1], num_classes, config.class_weight)
    model = _fresh_head(config, train[0], num_classes)
    compile_model(model, num_classes, config.learning_rate, jit_compile=False,
                  steps_per_execution=STEPS_PER_EXECUTION)
    data = ViewBank(*train, 1, config.batch_size, config.seed)
    model.fit(data, epochs=config.epochs, class_weight=weights, verbose=0)
    checks = _validation_batches(validation, weights)
    scores = model.evaluate(checks, verbose=0, return_dict=True)
    return {"head": "chapter", "pooling": "flatten", "dense_units": config.dense_units,
            "standardize": False, "weight_decay": 0.0, "learning_rate": config.learning_rate,
            "range_test": None, "best_epoch": config.epochs, "epochs_run": config.epochs,
            "val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"]),
            "val_losses": [float(scores["loss"])], "stopped_behind": None,
            "val_correct": correct_photos(model, validation),
            "cpu_seconds": round(time.process_time() - started, 2),
            "class_weight": _json_weights(weights)}


def _rank(tried: dict) -> tuple[float, float]:
    """The better head first: higher validation accuracy, then lower cross-entropy."""
    return -tried["val_accuracy"], tried["val_loss"]


def mcnemar_p(gained: int, lost: int) -> float:
    """McNemar's exact test (two-sided): how likely a gain of `gained` photos against `lost`,
    among the photos two classifiers score differently, is under chance alone (each such photo
    a fair coin: the binomial test of `gained` in `gained + lost`)."""
    from scipy.stats import binomtest  # scipy comes with scikit-learn

    return 1.0 if gained + lost == 0 else float(binomtest(gained, gained + lost).pvalue)


def choose(tried: list[dict], correct: list[np.ndarray]) -> dict:
    """The chosen candidate: the reference `tried[0]` (the linear head) unless another ranks
    above it (_rank) and gains significantly on the photos the two score differently (McNemar,
    SIGNIFICANCE; `correct[i]`: which validation photos `tried[i]` gets right); then the best
    ranked such. Records each comparison's counts in its candidate, as "against_linear"."""
    reference, passed = tried[0], [tried[0]]
    for candidate, right in zip(tried[1:], correct[1:]):
        gained = int(np.count_nonzero(right & ~correct[0]))
        lost = int(np.count_nonzero(~right & correct[0]))
        p = mcnemar_p(gained, lost)
        candidate["against_linear"] = {"gained": gained, "lost": lost, "photos": len(right),
                                       "p": float(f"{p:.3g}")}
        # gained > lost as well: with class weights the accuracy ranked is weighted
        if _rank(candidate) < _rank(reference) and gained > lost and p < SIGNIFICANCE:
            passed.append(candidate)
    return min(passed, key=_rank)


def search(config: TrainConfig, train, validation, num_classes: int, screen: bool = True
           ) -> dict:
    """What was tried and what was chosen, from (features, labels) of train and validation.
    The heads are fitted cheapest first (HEADS); each later one stops as soon as it is behind
    the best so far at equal epochs (SCREEN_EPOCHS on), unless `screen` is False (every fit
    runs to early stopping: how bench/ checks the screen). The linear head is chosen unless
    another is more accurate on validation, significantly so (choose)."""
    started, cpu = time.perf_counter(), time.process_time()
    train = (train[0], _labels(train[1], num_classes))  # features stay on disk, if cached
    validation = (validation[0], _labels(validation[1], num_classes))
    averaged = [(search_inputs("avg", split[0]), split[1]) for split in (train, validation)]
    inputs = {"avg": averaged, "flatten": (train, validation)}
    configs = {head: replace(config, **head_settings(head, config, 0.0)) for head in HEADS}
    weights = class_weights(train[1], num_classes, config.class_weight)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # scikit-learn's C choice runs beside the hidden-layer heads' range tests, which do not
        # need it: their small steps leave part of the 2 cores idle (1,000 photos: 1.6-1.9 s
        # CPU hidden). Every model is seeded when built: the order changes no result.
        pending = pool.submit(choose_weight_decay,
                              *[(x.reshape(len(x), -1), y) for x, y in averaged], config.seed,
                              weights)
        ranges = {head: head_range_test(configs[head], inputs[configs[head].pooling][0],
                                        num_classes) for head in HEADS if head != "linear"}
        decay = pending.result()
    # which validation photos the regression gets right: for McNemar's test, not the record
    tried = [{**logistic_candidate(decay), "val_correct": decay.pop("val_correct")}]
    for head in HEADS[1:]:
        rival = min(tried, key=_rank) if screen else None
        tried.append(try_head(head, configs[head], *inputs[configs[head].pooling], num_classes,
                              rival, ranges.get(head)))
    skipped = []
    if chapter_cost(train[0]) <= CHAPTER_BUDGET:
        tried.append(try_chapter(config, train, validation, num_classes))
    else:
        skipped.append({"head": "chapter", "reason": (
            f"its {TrainConfig.epochs} epochs would read {chapter_cost(train[0]):.1e} feature "
            f"values, over the search's budget of {CHAPTER_BUDGET:.0e}")})
    chosen = choose(tried, [t.pop("val_correct") for t in tried])
    return {"tried": tried, "skipped": skipped, "weight_decay": decay,
            "chosen_head": chosen["head"], "chosen": chosen_settings(chosen, config, decay),
            "rule": RULES, "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2)}  # of this process: all its threads


def chosen_settings(chosen: dict, config: TrainConfig, decay: dict) -> dict:
    """The TrainConfig fields the chosen candidate sets: the chapter's as they are; the
    linear head's one keeping epoch; a hidden-layer head's rate and early stopping."""
    if chosen["head"] == "chapter":
        return chapter_settings()
    settings = head_settings(chosen["head"], config, decay["weight_decay"])
    if chosen["head"] == "linear":
        return {**settings, "learning_rate": KEEP_RATE, "epochs": KEEP_EPOCHS,
                "early_stopping_patience": None, "monitor": "last"}
    return {**settings, "learning_rate": chosen["learning_rate"],
            "epochs": chosen["best_epoch"] + PATIENCE, "early_stopping_patience": PATIENCE,
            "monitor": "val_loss"}


def start_from_logistic(head: keras.Model, config: TrainConfig, features: np.ndarray,
                        labels: np.ndarray, num_classes: int) -> bool:
    """Set a recommended linear head to the logistic regression the search chose: the scaler's
    means and variances into its Normalization layer, the coefficients into its output (one
    sigmoid unit: the binary coefficients; softmax: the multinomial ones). Fitted again on the
    run's averaged training features (`features`, (N, C)) at the chosen C, as the baseline
    fits it (the same sample, lbfgs, deterministic). False, untouched, for any other head."""
    from .baseline import fit_logistic, training_sample

    found = config.recommendation or {}
    if found.get("chosen_head") != "linear":
        return False
    rows = training_sample(len(labels), config.seed)
    weights = class_weights(labels, num_classes, config.class_weight)
    fitted = fit_logistic((features[rows], labels[rows]), found["weight_decay"]["C"],
                          config.seed, weights)
    set_logistic(head, fitted)
    return True


def set_logistic(head: keras.Model, fitted) -> None:
    """Copy a fitted scaler + logistic regression pipeline into a standardizing linear head."""
    scaler, logistic = fitted[0], fitted[-1]
    layer = head.get_layer("standardize")
    layer.adapt_mean.assign(scaler.mean_.reshape(layer.adapt_mean.shape))
    layer.adapt_variance.assign((scaler.scale_ ** 2).reshape(layer.adapt_variance.shape))
    layer.finalize_state()
    head.get_layer("predictions").set_weights([logistic.coef_.T.astype("float32"),
                                               logistic.intercept_.astype("float32")])


def recommended_config(config: TrainConfig, train, validation, num_classes: int) -> TrainConfig:
    """`config` with the searched settings in place and the search recorded in it."""
    if validation is None:
        raise RunError("Recommended settings are measured on the validation split, and this "
                       "split has none: make a split with validation images, or use the "
                       "chapter's settings.")
    found = search(config, train, validation, num_classes)
    return replace(config, **found["chosen"], recommendation=found)


def head_name(tried: dict) -> str:
    """A candidate head in words (a search recorded before the linear head names none)."""
    if tried.get("head") == "chapter":
        return (f"the chapter's settings (flatten → Dense {TrainConfig.dense_units}, RMSprop "
                f"{TrainConfig.learning_rate:g}, {TrainConfig.epochs} epochs, the last kept)")
    if tried.get("head") == "linear":
        return f"linear head on averaged features (weight decay {tried['weight_decay']:.1e})"
    return f"{tried['pooling']} → Dense {tried.get('dense_units', TrainConfig.dense_units)}"


def range_test_figure(recommendation: dict):
    """The range test of each head tried: smoothed loss against the rate (log scale), the
    chosen rate marked."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for tried in recommendation["tried"]:
        curve, name = tried.get("range_test"), tried.get("head", tried["pooling"])
        if not curve:  # the logistic regression and the chapter's settings: no range test
            continue
        figure.add_trace(go.Scatter(x=curve["rates"], y=curve["losses"], mode="lines",
                                    name=f"{name}: smoothed loss"))
        # The chosen rate is a tenth of the minimum, between the sweep's points: interpolate.
        at = float(np.interp(np.log(tried["learning_rate"]), np.log(curve["rates"]),
                             curve["losses"]))
        rate = tried["learning_rate"]
        figure.add_trace(go.Scatter(x=[rate], y=[at], mode="markers", marker_symbol="star",
                                    marker_size=12, name=f"{name}: chosen {rate:.1e}"))
    figure.update_layout(title="Learning-rate range test", xaxis_type="log",
                         xaxis_title="learning rate", yaxis_title="training loss (smoothed)",
                         height=320, margin=dict(t=40, l=0, r=0, b=0))
    return figure


def _stopped_text(tried: dict) -> str:
    if not tried.get("stopped_behind"):
        return ""
    return (f" (stopped after {tried['stopped_behind']} epochs: behind the best head so far "
            "over as many epochs)")


def recommendation_lines(recommendation: dict) -> list[str]:
    """What was tried and what was chosen, in words, for the Curves page."""
    chosen, rule = recommendation["chosen"], recommendation["rule"]
    lines = [_tried_line(t) for t in recommendation["tried"]]
    lines += [f"{head_name(s)}: not tried, {s['reason']}." for s in
              recommendation.get("skipped", [])]
    decay = recommendation.get("weight_decay")
    if decay:
        lines.append("Weight decay: C = " + ", ".join(
            f"{t['C']:g} ({100 * t['val_accuracy']:.1f}%)" for t in decay["tried"])
            + f" on validation; C = {decay['C']:g} chosen, so {decay['weight_decay']:.1e}.")
    head = head_name({**chosen, "head": recommendation.get("chosen_head") or (
        "linear" if chosen.get("dense_units") == 0 else None)})
    rules = "; ".join(f"{what.replace('_', ' ')}, {how}" for what, how in rule.items())
    if choice := choice_line(recommendation):
        lines.append(choice)
    stopping = (f"early stopping with patience {chosen['early_stopping_patience']}"
                if chosen.get("early_stopping_patience") else "the last epoch kept")
    lines.append(f"Chosen: {head} at {chosen['learning_rate']:.1e} for at most "
                 f"{chosen['epochs']} epochs, {stopping} ({recommendation['seconds']:.0f} s of "
                 f"search). Rules: {rules}.")
    return lines


def _tried_line(tried: dict) -> str:
    scores = (f"validation loss {tried['val_loss']:.4f}, accuracy "
              f"{100 * tried['val_accuracy']:.1f}%")
    if tried.get("start"):  # the logistic regression itself: nothing trained by Keras
        return f"{head_name(tried)}: the logistic regression fitted by scikit-learn, {scores}"
    if tried.get("head") == "chapter":
        return f"{head_name(tried)}: at its last epoch, {scores}"
    return (f"{head_name(tried)}: rate {tried['learning_rate']:.1e}, best epoch "
            f"{tried['best_epoch']} of {tried['epochs_run']}, {scores}" + _stopped_text(tried))


def choice_line(recommendation: dict) -> str | None:
    """Why the linear head was kept or replaced, with McNemar's p; None for a search recorded
    before that test."""
    tried = recommendation["tried"]
    if not any("against_linear" in t for t in tried[1:]):
        return None
    if recommendation["chosen_head"] != "linear":
        winner = next(t for t in tried if t["head"] == recommendation["chosen_head"])
        name = head_name(winner)
        return (f"{name[0].upper() + name[1:]} replaces the linear head: it {_gain_text(winner)}, "
                f"unlikely to be chance (McNemar p = {winner['against_linear']['p']:.2g}).")
    ahead = [t for t in tried[1:] if _rank(t) < _rank(tried[0])]
    if not ahead:
        return "The linear head kept: no other head scored more validation photos."
    return "The linear head kept: " + "; ".join(
        f"{head_name(t)} {_gain_text(t)}, within chance (McNemar p = "
        f"{t['against_linear']['p']:.2g})" for t in ahead) + "."


def _gain_text(tried: dict) -> str:
    found = tried["against_linear"]
    net = found["gained"] - found["lost"]
    scored = (f"scored {net} more of {found['photos']} validation photos" if net > 0 else
              f"scored no more of {found['photos']} validation photos (unweighted)")
    return (f"{scored} ({found['gained']} right where the linear head was wrong, "
            f"{found['lost']} the other way)")
