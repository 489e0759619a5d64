"""How well the "none of these" check separates foreign photos from the model's own kind.

Trains a cats-vs-dogs model (the chapter's split, MobileNetV2 with ImageNet weights, fast
feature extraction), fits the run's statistics (ood.py: the cosine distance to the nearest
training photo, the validation split's 97.5th percentile as the threshold), then prints the
share flagged among the test photos and among foreign photos (flowers), and the AUROC of
the score between the two.

    KERAS_HOME=../shared/keras-home python bench/ood.py \\
        --data ../shared/data/dogs-vs-cats --foreign ../shared/data/foreign-flowers
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from transfer_core.datasets import SplitRequest, load_manifest, scan, split  # noqa: E402
from transfer_core.datasets import find_images  # noqa: E402
from transfer_core.predict import Predictor  # noqa: E402
from transfer_core.runs import Run, TrainConfig  # noqa: E402
from transfer_core.training import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the Dogs vs Cats folder (Kaggle names)")
    parser.add_argument("--foreign", required=True, help="a folder of photos of other things")
    parser.add_argument("--workspace", default="/tmp/transfer-lab-bench-ood")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    workspace = Path(args.workspace)
    manifest = split(scan(args.data), SplitRequest(preset="chapter")).save(workspace, "chapter")
    config = TrainConfig(manifest=str(manifest), backbone=args.backbone, weights="imagenet",
                         strategy="feature_extraction", epochs=args.epochs)
    run = Run.create(workspace, config)
    status = train(run, workspace)
    trained = time.perf_counter()
    predictor = Predictor(run)
    predictor.prepare_ood()
    fitted = time.perf_counter()
    test_paths, _ = load_manifest(manifest).files("test")
    foreign = [entry.path for entry in find_images(args.foreign)[1]]
    stats = predictor.ood_stats
    # The statistics read the training features from the cache: they must be what the model
    # itself computes for those photos.
    train_paths, _ = load_manifest(manifest).files("train")
    own = stats.scores(predictor.pooled_features(train_paths[:64]))
    test_scores, test_flags = stats.flags(predictor.pooled_features(test_paths))
    foreign_scores, foreign_flags = stats.flags(predictor.pooled_features(foreign))
    truth = np.r_[np.zeros(len(test_scores)), np.ones(len(foreign_scores))]
    result = {
        "backbone": args.backbone, "strategy": "feature_extraction", "epochs": args.epochs,
        "state": status.get("state"), "best_val_accuracy": run.summary()["best_val_accuracy"],
        "percentile": stats.percentile, "threshold": round(stats.threshold, 3),
        "neighbours": stats.neighbours,
        "train_self_distance_max": float(own.max()),
        "test_images": len(test_scores), "test_flagged": float(test_flags.mean()),
        "foreign_images": len(foreign_scores), "foreign_flagged": float(foreign_flags.mean()),
        "auroc": float(roc_auc_score(truth, np.r_[test_scores, foreign_scores])),
        "median_score": {"test": float(np.median(test_scores)),
                         "foreign": float(np.median(foreign_scores))},
        "seconds": {"train": round(trained - started, 1), "fit_statistics": round(
            fitted - trained, 1), "total": round(time.perf_counter() - started, 1)},
        "statistics_bytes": (run.folder / "ood.npz").stat().st_size,
        "cpu": platform.processor() or platform.machine(),
    }
    print(f"test photos flagged: {100 * result['test_flagged']:.1f}% of {len(test_scores)}")
    print(f"foreign photos flagged: {100 * result['foreign_flagged']:.1f}% of "
          f"{len(foreign_scores)}")
    print(f"AUROC: {result['auroc']:.4f}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
