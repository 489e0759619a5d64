"""The simplest classifier on a run's features: a logistic regression on the pooled cached
conv-base features, to show beside the run's own score whether its dense head earns its keep.

Only for fast feature extraction, whose train/validation/test features are (or cheaply become)
cached: the base has already run. Each feature map is averaged over its spatial axes, and
scikit-learn's LogisticRegression is fitted on the training split (a seeded sample of
MAX_TRAIN_PHOTOS when it holds more) with C chosen from a small grid by validation accuracy
(ties: the lower validation log loss). Seconds on a CPU.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .datasets import load_manifest
from .feature_rows import pooled  # in chunks: a cached split is never read whole
from .features import FeatureCache
from .runs import Run, TrainConfig

C_GRID = (0.01, 0.1, 1.0, 10.0)
# Fitted on at most this many training photos, a seeded sample: its memory would otherwise grow
# with the split (80,000 pooled MobileNetV2 rows are 410 MB, and the scaler copies them), and a
# linear model on about a thousand averaged features has little left to learn from more.
MAX_TRAIN_PHOTOS = 10_000


def applies(config: TrainConfig) -> bool:
    """Whether the run's features are the plain cached ones a baseline can reuse."""
    return config.strategy == "feature_extraction"


def training_sample(photos: int, seed: int, limit: int = MAX_TRAIN_PHOTOS) -> np.ndarray:
    """The rows the baseline fits on: all of them, or a seeded sample of `limit`, in order."""
    if photos <= limit:
        return np.arange(photos)
    return np.sort(np.random.default_rng(seed).choice(photos, limit, replace=False))


def fit_logistic(train: tuple, c: float, seed: int = 0, class_weight: dict | None = None):
    """The pipeline (scaler + logistic regression at `c`) fitted on `train`, (pooled features,
    labels): lbfgs, deterministic, so the same data and C give the same model again."""
    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=c, max_iter=2000, random_state=seed, class_weight=class_weight))
    return model.fit(*train)


def fit_baseline(train: tuple, validation: tuple | None, c_grid=C_GRID, seed: int = 0,
                 class_weight: dict | None = None):
    """The fitted pipeline (scaler + logistic regression) and the C tried with their
    validation accuracy and loss. `train` and `validation` are (pooled features, labels);
    `class_weight` weighs the training loss, as Keras' does (None: every photo alike)."""
    tried, best, best_key = [], None, None
    for c in (c_grid if validation is not None else (1.0,)):
        model = fit_logistic(train, c, seed, class_weight)
        if validation is None:
            return model, [{"C": c}]
        x, y = validation
        accuracy = float(accuracy_score(y, model.predict(x)))
        loss = float(log_loss(y, model.predict_proba(x), labels=model.classes_))
        tried.append({"C": c, "val_accuracy": accuracy, "val_loss": loss})
        key = (-accuracy, loss)
        if best_key is None or key < best_key:
            best, best_key = model, key
    return best, tried


def baseline(run: Run, split: str = "test", workspace=None) -> dict | None:
    """The logistic regression's validation and `split` accuracy on the run's pooled features;
    None for a strategy whose features are not the plain cached ones."""
    from .training import feature_spec  # training imports much; only needed here

    config = run.config
    if not applies(config):
        return None
    started = time.perf_counter()
    manifest = load_manifest(config.manifest)
    cache = FeatureCache(workspace or run.folder.parent.parent)
    spec = feature_spec(config)

    def split_data(name, sample=False):
        if not manifest.files(name)[0]:
            return None
        features = cache.extract(manifest, name, spec)
        labels = np.asarray(features.labels)
        rows = training_sample(len(labels), config.seed) if sample else None
        return pooled(features.features, rows=rows), labels if rows is None else labels[rows]

    train = split_data("train", sample=True)
    validation, scored = split_data("validation"), split_data(split)
    model, tried = fit_baseline(train, validation, seed=config.seed)
    chosen = model[-1].C
    result = {"model": "logistic regression on the spatially averaged features",
              "C": chosen, "tried": tried, "split": split,
              "accuracy": float(accuracy_score(scored[1], model.predict(scored[0]))),
              "images": int(len(scored[1])), "train_images": int(len(train[1]))}
    if validation is not None:
        result["val_accuracy"] = next(t["val_accuracy"] for t in tried if t["C"] == chosen)
        result["val_images"] = int(len(validation[1]))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def verdict(run_accuracy: float, baseline_accuracy: float) -> str:
    """Plain words for the page and the CLI: does the dense head beat the plain baseline?"""
    difference = 100 * (run_accuracy - baseline_accuracy)
    if difference >= 0.5:
        return f"the dense head earns its keep ({difference:+.1f} points)."
    if difference > -0.5:
        return "the dense head does no better than it (within half a point)."
    return (f"the dense head does not earn its keep ({difference:+.1f} points): try "
            "“Recommended for this dataset” on the Train page.")


def baseline_lines(result: dict) -> list[str]:
    """What the Evaluate page and `evaluate` say about the baseline of an evaluation result
    (none for a run without one)."""
    from .stats import accuracy_text

    found = result.get("baseline")
    if not found:
        return []
    if "error" in found:
        return [f"No logistic-regression baseline: {found['error']}"]
    lines = [f"A plain logistic regression on the same features (averaged over the image, C = "
             f"{found['C']:g} chosen on validation) scores "
             f"{accuracy_text(found['accuracy'], found['images'])} on {found['split']}: "
             + verdict(result["accuracy"], found["accuracy"])]
    if "val_accuracy" in found:
        lines.append(f"Its validation accuracy: "
                     f"{accuracy_text(found['val_accuracy'], found['val_images'])}"
                     .replace("test photos", "validation photos"))
    return lines
