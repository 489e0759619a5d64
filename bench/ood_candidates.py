"""Candidate "none of these" scores compared in one run, on the features of a cats-vs-dogs
run's base: the flagged share of test and foreign photos at three validation percentiles,
the AUROC, and the fit time. ood.py uses the winner (docs/BENCHMARKS.md).

Reads the training and validation features from the feature cache that bench/ood.py's run
left in its workspace (the base's output, (N, h, w, c)); computes the test split's once (then
cached too) and the foreign photos'.

    KERAS_HOME=../shared/keras-home python bench/ood_candidates.py \\
        --foreign ../shared/data/foreign-flowers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from transfer_core.datasets import find_images, load_manifest  # noqa: E402
from transfer_core.features import FeatureCache, FeatureSpec, build_extractor  # noqa: E402
from transfer_core.inputs import inference_batches  # noqa: E402
from transfer_core.ood import unit_rows  # noqa: E402

PERCENTILES = (95.0, 97.5, 99.0)


def knn_cosine(k):
    def fit(train, _labels):
        reference = unit_rows(train)
        return lambda x: 1 - -np.partition(-(unit_rows(x) @ reference.T), k - 1, axis=1)[:, k - 1]
    return fit


def mahalanobis(normalise: bool, relative: bool, shrink: float = 1e-3):
    """Lee et al. 2018 (shared covariance, nearest class mean); `relative`: minus the
    distance to one Gaussian of all training photos (Ren et al. 2021)."""
    def fit(train, labels):
        prep = unit_rows if normalise else (lambda a: np.asarray(a, "float64"))
        x = prep(train).astype("float64")
        classes = np.unique(labels)
        means = np.stack([x[labels == c].mean(0) for c in classes])
        within = _precision(x - means[np.searchsorted(classes, labels)], shrink)
        whole_mean = x.mean(0)
        whole = _precision(x - whole_mean, shrink)

        def score(features):
            f = prep(features).astype("float64")
            ds = np.stack([_squared(f - m, within) for m in means])
            if relative:
                ds = ds - _squared(f - whole_mean, whole)
            return ds.min(axis=0)
        return score
    return fit


def _precision(centred, shrink):
    cov = centred.T @ centred / len(centred)
    return np.linalg.inv(cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov)))


def _squared(offset, precision):
    return ((offset @ precision) * offset).sum(axis=1)


POOLINGS = {
    "mean": lambda maps: maps.mean(axis=(1, 2)),
    "mean+max": lambda maps: np.concatenate([maps.mean(axis=(1, 2)), maps.max(axis=(1, 2))], 1),
    # Several scales: the whole map and its four overlapping corner windows.
    "mean+corners": lambda maps: np.concatenate(
        [maps.mean(axis=(1, 2))] + [maps[:, i:i + 3, j:j + 3].mean(axis=(1, 2))
                                    for i in (0, maps.shape[1] - 3)
                                    for j in (0, maps.shape[2] - 3)], 1),
}
CANDIDATES = [("mean", f"knn-cosine k={k}", knn_cosine(k)) for k in (1, 5, 10, 50)] + [
    ("mean", "mahalanobis", mahalanobis(False, False)),
    ("mean", "relative mahalanobis", mahalanobis(False, True)),
    ("mean", "mahalanobis on unit features", mahalanobis(True, False)),
    ("mean", "relative mahalanobis on unit features", mahalanobis(True, True)),
    ("mean+max", "knn-cosine k=1", knn_cosine(1)),
    ("mean+corners", "knn-cosine k=1", knn_cosine(1)),
    ("mean+corners", "knn-cosine k=5", knn_cosine(5)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foreign", required=True, help="a folder of photos of other things")
    parser.add_argument("--workspace", default="/tmp/transfer-lab-bench-ood",
                        help="bench/ood.py's workspace (its manifest and feature cache)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    args = parser.parse_args()
    manifest = load_manifest(Path(args.workspace) / "manifests" / "chapter.json")
    spec = FeatureSpec(args.backbone, "imagenet", None, "backbone").resolved()
    cache = FeatureCache(args.workspace)
    maps = {split: cache.extract(manifest, split, spec) for split in
            ("train", "validation", "test")}
    foreign = [entry.path for entry in find_images(args.foreign)[1]]
    extractor = build_extractor(spec)
    foreign_maps = np.concatenate([extractor.predict_on_batch(batch.astype("float32")) for batch
                                   in inference_batches(foreign, spec.image_size, 32)])
    labels = np.asarray(maps["train"].labels)
    rows = []
    for pooling, name, fit in CANDIDATES:
        pool = POOLINGS[pooling]
        train, validation, test = (pool(np.asarray(maps[s].features, "float32"))
                                   for s in ("train", "validation", "test"))
        started = time.perf_counter()
        score = fit(train, labels)
        held = score(validation)
        fit_seconds = time.perf_counter() - started
        test_scores, foreign_scores = score(test), score(pool(foreign_maps))
        truth = np.r_[np.zeros(len(test_scores)), np.ones(len(foreign_scores))]
        row = {"pooling": pooling, "score": name, "fit_seconds": round(fit_seconds, 2),
               "auroc": round(float(roc_auc_score(truth, np.r_[test_scores, foreign_scores])), 4)}
        for p in PERCENTILES:
            threshold = np.percentile(held, p)
            row[f"p{p:g}"] = {"test_flagged": round(float((test_scores > threshold).mean()), 4),
                              "foreign_flagged":
                                  round(float((foreign_scores > threshold).mean()), 4)}
        rows.append(row)
        print(f"{pooling:13} {name:40} AUROC {row['auroc']:.4f}  fit {fit_seconds:5.2f} s  " +
              "  ".join(f"p{p:g}: {100 * row[f'p{p:g}']['test_flagged']:4.1f}% / "
                        f"{100 * row[f'p{p:g}']['foreign_flagged']:5.1f}%" for p in PERCENTILES),
              flush=True)
    print(json.dumps({"test_images": len(maps["test"].labels), "foreign_images": len(foreign),
                      "candidates": rows}, indent=1))


if __name__ == "__main__":
    main()
