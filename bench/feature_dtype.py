"""Does storing cached features in float16 instead of float32 change test accuracy?

Fast feature extraction (MobileNetV2, offline ImageNet weights) on a subset of the chapter's
split; the features are extracted once in float32, then rounded to float16 exactly as the
cache writes them, and both copies train the chapter's head (Flatten → Dense 256, RMSprop
2e-5, batch 20, same seed) and fit baseline.py's logistic regression. Prints one JSON line per
storage dtype: test accuracy of each, label agreement with float32, feature rounding error.

    KERAS_HOME=/work/shared/keras-home nice -n 10 python -m bench.feature_dtype \
        --data /work/shared/data/dogs-vs-cats --counts 500 250 500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from bench.workload import chapter_manifest
from transfer_core.baseline import fit_baseline, pooled
from transfer_core.features import FeatureCache, FeatureSpec
from transfer_core.strategies import build_head, compile_model


def head_predictions(train, validation, test, epochs: int, seed: int) -> np.ndarray:
    """The chapter's head trained on `train`, its test-set labels."""
    keras.utils.set_random_seed(seed)
    chapter = SimpleNamespace(pooling="flatten", dense_units=256, dropout=0.5)
    head = build_head(train[0].shape[1:], 2, chapter)
    compile_model(head, 2, 2e-5, jit_compile=True)
    head.fit(*train, validation_data=validation, epochs=epochs, batch_size=20, verbose=0)
    keras.backend.clear_session()
    return (head.predict(test[0], batch_size=256, verbose=0)[:, 0] > 0.5).astype(int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data/dogs-vs-cats")
    parser.add_argument("--counts", type=int, nargs=3, default=(500, 250, 500))
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="feature-dtype-"))
    manifest = chapter_manifest(args.data, args.counts, workspace)
    spec = FeatureSpec("mobilenet_v2", "imagenet", args.size)
    started = time.perf_counter()
    splits = {}
    for name in ("train", "validation", "test"):
        found = FeatureCache(workspace).extract(manifest, name, spec)
        splits[name] = (np.asarray(found.features, "float32"),
                        np.asarray(found.labels, "float32"))
    print(json.dumps({"extraction_seconds": round(time.perf_counter() - started, 1),
                      "feature_shape": list(splits["train"][0].shape[1:])}), flush=True)
    reference = {}
    for dtype in ("float32", "float16"):
        stored = {k: (x.astype(dtype).astype("float32"), y) for k, (x, y) in splits.items()}
        error = np.abs(stored["train"][0] - splits["train"][0])
        labels = stored["test"][1]
        head = head_predictions(stored["train"], stored["validation"], stored["test"],
                                args.epochs, args.seed)
        model, _ = fit_baseline(*[(pooled(stored[k][0]), stored[k][1])
                                  for k in ("train", "validation")], seed=args.seed)
        logistic = model.predict(pooled(stored["test"][0]))
        reference.setdefault("head", head)
        reference.setdefault("logistic", logistic)
        print(json.dumps({
            "storage": dtype, "bytes_per_image": int(stored["train"][0][0].size
                                                      * np.dtype(dtype).itemsize),
            "max_abs_error": float(error.max()),
            "max_relative_error": float((error / np.maximum(np.abs(splits["train"][0]),
                                                             1e-3)).max()),
            "head_test_accuracy": float((head == labels).mean()),
            "head_agreement_with_float32": float((head == reference["head"]).mean()),
            "logistic_test_accuracy": float((logistic == labels).mean()),
            "logistic_agreement_with_float32": float((logistic == reference["logistic"]).mean()),
            "test_images": int(len(labels))}), flush=True)


if __name__ == "__main__":
    main()
