"""Test-split evaluation of a run: accuracy, loss, confusion matrix, per-class precision,
recall and F1, ROC AUC for two classes, and the images it got wrong, most confident first.

Computed once and kept as the run's evaluation.json (recomputed if the model changes).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn import metrics

from .baseline import baseline
from .datasets import load_manifest
from .errors import DatasetError, ImageError, TransferLabError
from .inputs import SPLIT_AGAIN, check_split_files, inference_batches
from .predict import load_run_model, probabilities
from .runs import Run
from .stats import wilson_interval
from .storage import write_json_atomic


def current_evaluation(run: Run, split: str = "test") -> dict | None:
    """The run's evaluation.json when it is of its model.keras as it is now and of `split`;
    None when there is none, or it is stale (a later model, another split)."""
    cached = run.evaluation()
    if cached is None or cached["split"] != split:
        return None
    return cached if cached.get("model_mtime_ns") == _model_stamp(run) else None


def _model_stamp(run: Run) -> int | None:
    return run.model_path.stat().st_mtime_ns if run.model_path.exists() else None


def evaluate(run: Run, batch_size: int = 32, split: str = "test", force: bool = False,
             progress=None) -> dict:
    """The run's evaluation on `split`, from evaluation.json when it is still current."""
    cached = current_evaluation(run, split)
    if cached and not force:
        return cached
    stamp = _model_stamp(run)
    config = run.config
    manifest = load_manifest(config.manifest)
    paths, labels = manifest.files(split)
    if not paths:
        raise DatasetError(f"The run's manifest has no {split} images to evaluate on.")
    check_split_files(paths, split)  # before the model loads
    started = time.perf_counter()
    model = load_run_model(run)
    try:
        probs = _predict_all(model, paths, config.image_size, batch_size, progress)
    except ImageError as exc:  # deleted or damaged since the check above
        raise ImageError(f"{exc}: the file changed after the split; {SPLIT_AGAIN}.") from None
    result = summarize(probs, np.asarray(labels), config.classes, paths)
    # A split without a test folder may be evaluated on validation: the pages must say so.
    evaluated_on = "validation" if split == "test" and manifest.test_is_validation else split
    result.update(split=split, evaluated_on=evaluated_on, model_mtime_ns=stamp,
                  seconds=round(time.perf_counter() - started, 2),
                  baseline=_baseline(run, split))
    write_json_atomic(run.folder / "evaluation.json", result)
    return result


def _baseline(run: Run, split: str) -> dict | None:
    """The logistic-regression baseline beside the run's score; a failure is said in it,
    never a failed evaluation (the run's own figures stand without it)."""
    try:
        return baseline(run, split)
    except TransferLabError as exc:
        return {"error": str(exc)}


def _predict_all(model, paths, image_size, batch_size, progress) -> np.ndarray:
    rows = []
    for done, images in enumerate(inference_batches(paths, image_size, batch_size), 1):
        rows.append(probabilities(model, _padded(images, batch_size))[:len(images)])
        if progress:
            progress(min(done * batch_size, len(paths)), len(paths))
    return np.concatenate(rows)


def _padded(images: np.ndarray, batch_size: int) -> np.ndarray:
    """The last, smaller batch padded to full size: one shape, so the model is traced once."""
    missing = batch_size - len(images)
    return np.concatenate([images, np.zeros((missing, *images.shape[1:]), images.dtype)]) \
        if missing > 0 else images


def summarize(probs: np.ndarray, labels: np.ndarray, classes: list[str], paths: list[str]) -> dict:
    """Every figure of the evaluation from predicted probabilities and true labels."""
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 ± 1e-7
    predicted = probs.argmax(axis=1)
    index = list(range(len(classes)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0)
    result = {
        "classes": classes,
        "images": int(len(labels)),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "accuracy_interval": list(wilson_interval(int((predicted == labels).sum()), len(labels))),
        "loss": float(metrics.log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=index)),
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=index).tolist(),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f),
                          "support": int(s)}
                      for c, p, r, f, s in zip(classes, precision, recall, f1, support)},
        "roc_auc": (float(metrics.roc_auc_score(labels, probs[:, 1]))
                    if len(classes) == 2 and len(set(labels.tolist())) == 2 else None),
    }
    wrong = np.flatnonzero(predicted != labels)
    mistakes = [{"path": paths[i], "true": classes[labels[i]], "predicted": classes[predicted[i]],
                 "confidence": float(probs[i, predicted[i]]),
                 "probabilities": {c: float(p) for c, p in zip(classes, probs[i])}}
                for i in wrong]
    result["mistakes"] = sorted(mistakes, key=lambda m: m["confidence"], reverse=True)
    return result
