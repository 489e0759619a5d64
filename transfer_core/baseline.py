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
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .datasets import load_manifest
from .feature_rows import CHUNK_ROWS, pooled  # in chunks: a split is never read whole
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
    if validation is None:
        return fit_logistic(train, 1.0, seed, class_weight), [{"C": 1.0}]
    return fit_and_choose(train, [validation], c_grid, seed, class_weight)  # one chunk


def fit_and_choose(train: tuple, validation_chunks, c_grid=C_GRID, seed: int = 0,
                   class_weight: dict | None = None):
    """fit_baseline's model and tries, with validation given as (pooled rows, labels) chunks:
    one pipeline fitted per C, the one choose_on_chunks picks returned."""
    models = [fit_logistic(train, c, seed, class_weight) for c in c_grid]
    best, tried = choose_on_chunks(models, validation_chunks)
    return models[best], tried


def pooled_chunks(features: np.ndarray, labels: np.ndarray, size: int = CHUNK_ROWS):
    """(pooled rows, labels) of a cached split, `size` photos at a time, in order: scoring
    holds one chunk, not the split (10,000 pooled photos are 51 MB, and the scaler copies them)."""
    for start in range(0, len(labels), size):
        rows = np.arange(start, min(start + size, len(labels)))
        yield pooled(features, rows=rows), labels[start:start + size]


def chunked_accuracy(model, chunks) -> tuple[float, int]:
    """The model's accuracy on (pooled rows, labels) chunks, and the photos scored."""
    correct = photos = 0
    for x, y in chunks:
        correct += int(np.count_nonzero(model.predict(x) == y))
        photos += len(y)
    return correct / photos, photos


def choose_on_chunks(models: list, chunks) -> tuple[int, list[dict]]:
    """The index of the model that fit_baseline would choose (best validation accuracy,
    ties: the lower log loss, then the first) and each one's scores, from one pass over
    the validation chunks: only the class probabilities (photos × classes) are kept whole."""
    correct, probabilities, labels = [0] * len(models), [[] for _ in models], []
    for x, y in chunks:
        labels.append(y)
        for i, model in enumerate(models):
            correct[i] += int(np.count_nonzero(model.predict(x) == y))
            probabilities[i].append(model.predict_proba(x))
    y = np.concatenate(labels)
    scores = [(correct[i] / len(y), float(log_loss(y, np.concatenate(probabilities[i]),
                                                   labels=model.classes_)))
              for i, model in enumerate(models)]
    tried = [{"C": model[-1].C, "val_accuracy": accuracy, "val_loss": loss}
             for model, (accuracy, loss) in zip(models, scores)]
    best = min(range(len(models)), key=lambda i: (-scores[i][0], scores[i][1], i))
    return best, tried


def baseline(run: Run, split: str = "test", workspace=None,
             chunk_rows: int = CHUNK_ROWS) -> dict | None:
    """The logistic regression's validation and `split` accuracy on the run's pooled features;
    None for a strategy whose features are not the plain cached ones. The training sample is
    pooled whole (at most MAX_TRAIN_PHOTOS); validation and `split` are scored `chunk_rows`
    photos at a time, so this memory stays flat in the dataset's size."""
    from .training import feature_spec  # training imports much; only needed here

    config = run.config
    if not applies(config):
        return None
    started = time.perf_counter()
    manifest = load_manifest(config.manifest)
    cache = FeatureCache(workspace or run.folder.parent.parent)
    spec = feature_spec(config)

    def split_features(name):
        if not manifest.files(name)[0]:
            return None
        features = cache.extract(manifest, name, spec)
        return features.features, np.asarray(features.labels)

    def chunks(found):
        return pooled_chunks(*found, size=chunk_rows)

    features, labels = split_features("train")
    rows = training_sample(len(labels), config.seed)
    train = pooled(features, rows=rows), labels[rows]
    train_images = len(train[1])
    validation, scored = split_features("validation"), split_features(split)
    model, tried = (fit_baseline(train, None, seed=config.seed) if validation is None else
                    fit_and_choose(train, chunks(validation), seed=config.seed))
    del train  # the sample's pooled rows are not needed to score
    chosen = model[-1].C
    accuracy, images = chunked_accuracy(model, chunks(scored))
    result = {"model": "logistic regression on the spatially averaged features",
              "C": chosen, "tried": tried, "split": split, "accuracy": float(accuracy),
              "images": int(images), "train_images": int(train_images)}
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
