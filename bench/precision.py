"""float32 against bfloat16 for the conv base: forward pass, our extraction, test accuracy, and
what "auto" costs. Prints a table and writes docs/benchmarks/precision.json.

Run from the project's root (KERAS_HOME with the offline weights for the accuracy part):
    KERAS_HOME=../shared/keras-home python -m bench.precision --data ../shared/data/dogs-vs-cats

Every speed is measured A B A B … in one process (float32, then bfloat16, repeated), so a
neighbour's load on a shared machine falls on both; the table gives the median of the
per-pair ratios with their range. Speed does not depend on the weights: weights none there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bench.workload import chapter_manifest, quiet
from transfer_core import precision, training
from transfer_core.datasets import load_manifest
from transfer_core.evaluation import evaluate
from transfer_core.features import FeatureCache, FeatureSpec, build_extractor
from transfer_core.runs import Run, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
FORWARD = [("vgg16", 150), ("resnet50_v2", 224), ("mobilenet_v2", 160),
           ("efficientnet_b0", 224)]
EXTRACT_TARGET = 1.7  # VGG16 extraction, bfloat16 ÷ float32
ACCURACY_TARGET = 0.3  # points of test accuracy, |bfloat16 − float32|
AUTO_TARGET_SECONDS = 2.0  # "auto" on a CPU without bfloat16


def forward(pairs: int, batches: int) -> dict:
    """Bare forward pass, batch 32, img/s per precision, interleaved."""
    out = {}
    for name, size in FORWARD:
        models = {p: build_extractor(FeatureSpec(name, "none", size, precision=p))
                  for p in ("float32", "bfloat16")}
        batch = np.random.default_rng(0).integers(0, 255, (32, size, size, 3), dtype="uint8")
        for model in models.values():
            model.predict_on_batch(batch)  # warm-up: traces
        rates = {p: [] for p in models}
        for _ in range(pairs):
            for p, model in models.items():
                started = time.perf_counter()
                for _ in range(batches):
                    model.predict_on_batch(batch)
                rates[p].append(32 * batches / (time.perf_counter() - started))
        out[f"{name}@{size}"] = _summary(rates)
        print(f"forward {name}@{size}: {out[f'{name}@{size}']}", file=sys.stderr)
        keras.backend.clear_session()
    return out


def extract(data: str, images: int, pairs: int) -> dict:
    """VGG16@150 through FeatureCache.extract, a cold cache every time, interleaved."""
    with tempfile.TemporaryDirectory() as work:
        manifest = chapter_manifest(data, (images // 2, 0, 0), Path(work))
        rates = {"float32": [], "bfloat16": []}
        for _ in range(pairs):
            for p in rates:
                with tempfile.TemporaryDirectory() as cold:
                    result = FeatureCache(cold).extract(
                        manifest, "train", FeatureSpec("vgg16", "none", 150, precision=p))
                rates[p].append(result.images_per_second)
                keras.backend.clear_session()
    return {"images": images, **_summary(rates)}


def accuracy(data: str, epochs: int) -> dict:
    """MobileNetV2 (offline ImageNet weights), chapter split, fast feature extraction: the
    test accuracy of a float32 run and of a run forced to bfloat16 (the head float32)."""
    out = {}
    with tempfile.TemporaryDirectory() as work:
        manifest = chapter_manifest(data, (2000, 1000, 1000), Path(work))
        for p in ("float32", "bfloat16"):
            config = TrainConfig(manifest=str(manifest.path), backbone="mobilenet_v2",
                                 strategy="feature_extraction", epochs=epochs, precision=p,
                                 classes=list(manifest.classes))
            run = Run.create(work, config)
            started = time.perf_counter()
            with quiet():
                status = training.train(run, work)
                result = evaluate(run)
            out[p] = {"test_accuracy": result["accuracy"], "test_images": result["images"],
                      "state": status["state"], "status_precision": status.get("precision"),
                      "seconds": round(time.perf_counter() - started, 1)}
            print(f"accuracy {p}: {out[p]}", file=sys.stderr)
            keras.backend.clear_session()
    out["difference_points"] = round(100 * (out["bfloat16"]["test_accuracy"]
                                            - out["float32"]["test_accuracy"]), 2)
    return out


def auto_cost(data: str) -> dict:
    """Seconds of precision.resolve("auto") from nothing remembered: with this CPU's flags
    (MobileNetV2, ImageNet weights: a full measurement), with them hidden (an empty flag set:
    a CPU without bfloat16), and the measurement alone for VGG16 (weights none)."""
    with tempfile.TemporaryDirectory() as work:
        manifest = chapter_manifest(data, (200, 0, 0), Path(work))
        check = precision.check_set(*load_manifest(manifest.path).files("train"))
        out = {}
        for label, flags in (("hidden", set()), ("this_cpu", None)):
            started = time.perf_counter()
            chosen = precision.resolve("auto", "mobilenet_v2", "imagenet", 160, check,
                                       workspace=Path(work) / label, flags=flags)
            out[f"mobilenet_v2_{label}"] = {"seconds": round(time.perf_counter() - started, 2),
                                            **chosen}
        started = time.perf_counter()
        out["vgg16_measurement"] = {**precision.compare("vgg16", "none", 150, check),
                                    "seconds": round(time.perf_counter() - started, 2)}
    return out


def _summary(rates: dict) -> dict:
    ratios = [b / a for a, b in zip(rates["float32"], rates["bfloat16"])]
    return {"float32": round(statistics.median(rates["float32"]), 1),
            "bfloat16": round(statistics.median(rates["bfloat16"]), 1),
            "ratio_median": round(statistics.median(ratios), 2),
            "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
            "pairs": len(ratios)}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = precision.cpu_flags()
    return {"cpu": model, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
            "avx512": sorted(f for f in flags if f.startswith("avx512"))}


def table(result: dict) -> str:
    lines = ["| what | float32 | bfloat16 | bf16 ÷ f32 (median, range) | target |",
             "|---|---|---|---|---|"]
    for key, one in result.get("forward", {}).items():
        lines.append(f"| forward {key}, img/s | {one['float32']} | {one['bfloat16']} | "
                     f"{one['ratio_median']} ({one['ratio_range'][0]}–{one['ratio_range'][1]}) "
                     "| |")
    if "extract" in result:
        one = result["extract"]
        lines.append(f"| VGG16@150 FeatureCache.extract, {one['images']} photos, img/s | "
                     f"{one['float32']} | {one['bfloat16']} | {one['ratio_median']} "
                     f"({one['ratio_range'][0]}–{one['ratio_range'][1]}) | "
                     f"≥ {EXTRACT_TARGET} {_verdict(one['ratio_median'] >= EXTRACT_TARGET)} |")
    if "accuracy" in result:
        one = result["accuracy"]
        ok = abs(one["difference_points"]) <= ACCURACY_TARGET
        lines.append(f"| MobileNetV2 test accuracy, chapter split | "
                     f"{one['float32']['test_accuracy']:.2%} | "
                     f"{one['bfloat16']['test_accuracy']:.2%} | "
                     f"{one['difference_points']:+.2f} points | ±{ACCURACY_TARGET} "
                     f"{_verdict(ok)} |")
    for key, one in result.get("auto", {}).items():
        lines.append(f"| auto: {key}, s | | | {one['seconds']} → {one['precision']} "
                     f"({one['reason']}) | {'< 2 s' if 'hidden' in key else ''} |")
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats"))
    parser.add_argument("--parts", default="forward,extract,auto,accuracy")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/precision.json"))
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    result = {"machine": machine(), "shared_machine": True, "created": time.time()}
    if "forward" in parts:
        result["forward"] = forward(args.pairs, args.batches)
    if "extract" in parts:
        result["extract"] = extract(args.data, args.images, max(3, args.pairs - 2))
    if "auto" in parts:
        result["auto"] = auto_cost(args.data)
    if "accuracy" in parts:
        result["accuracy"] = accuracy(args.data, args.epochs)
    out = Path(args.out)
    known = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**known, **result}, indent=1, default=str) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
