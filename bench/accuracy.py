"""Accuracy with real ImageNet weights, and the time from raw photos to a test accuracy: ours
(scan, split, train, evaluate through transfer_core) against the chapter's code path
(`chapter_baseline.run_chapter`) with the same backbone, weights, epochs and images.

Our run of a strategy is made once per process and shared by both sections.
"""

from __future__ import annotations

import functools
import time

from bench import chapter_baseline as chapter
from bench.workload import (BenchError, ValidationTimer, chapter_layout, chapter_manifest,
                            fresh_dir, log, quiet, reset_keras, row)
from transfer_core import training
from transfer_core.backbones import get_backbone
from transfer_core.datasets import load_manifest, scan
from transfer_core.evaluation import evaluate
from transfer_core.features import FeatureCache
from transfer_core.runs import Run, TrainConfig

CHAPTER_STRATEGY = {"feature_extraction": "extract", "feature_extraction_augmented": "augmented",
                    "fine_tune": "fine_tune"}
# What the chapter reports for VGG16 (DLwP 1st ed., 5.3, and the blog post that retells it).
REPORTED = {"feature_extraction": "~90% (VGG16)",
            "feature_extraction_augmented": "96% (VGG16; ~90% since Keras 2.1)",
            "fine_tune": "97% (VGG16)"}
TARGETS = {"feature_extraction": 0.96, "fine_tune": 0.975}  # MobileNetV2 test accuracy
PHASES = ("prepare", "extraction", "training", "validation", "test")


@functools.cache
def prepared(s) -> dict:
    """Ours from raw photos: scan (decode every photo of the folder), then the chapter's split."""
    started = time.perf_counter()
    report = scan(s.data)
    seconds = time.perf_counter() - started
    workspace = fresh_dir(s, "accuracy")
    manifest = chapter_manifest(s.data, s.counts, workspace)
    usable = {entry.path for entry in report.images}
    if any(path not in usable for path, _, _ in manifest.rows):
        raise BenchError(f"the scan of {s.data} skipped photos the chapter's split needs")
    log("accuracy", f"scanned {len(report.images)} photos in {seconds:.1f} s")
    return {"workspace": workspace, "manifest": manifest.path, "seconds": seconds}


@functools.cache
def ours(s, strategy: str) -> dict:
    """Train and evaluate one strategy through transfer_core; seconds per phase."""
    prep = prepared(s)
    name, size = s.accuracy_backbone
    config = TrainConfig(manifest=prep["manifest"], backbone=name, weights="imagenet",
                         strategy=strategy, epochs=s.epochs, fine_tune_epochs=s.fine_tune_epochs,
                         image_size=size, seed=s.seed)
    workspace = prep["workspace"]
    run = Run.create(workspace, config)
    phases = dict.fromkeys(PHASES, 0.0)
    phases["prepare"] = prep["seconds"]
    if strategy == "feature_extraction":
        # What train() does first, timed apart; train() then finds the features in the cache.
        started = time.perf_counter()
        for split in ("train", "validation"):
            FeatureCache(workspace).extract(load_manifest(config.manifest), split,
                                            training.feature_spec(config))
        phases["extraction"] = time.perf_counter() - started
    started = time.perf_counter()
    validation_timer = ValidationTimer()
    status = training.train(run, workspace, callbacks=[validation_timer])
    validation = validation_timer.seconds
    if status["state"] != "finished":
        raise BenchError(f"our {strategy} run failed: {status.get('error')} ({run.folder})")
    phases["validation"] = sum(validation)
    phases["training"] = time.perf_counter() - started - phases["validation"]
    started = time.perf_counter()
    evaluation = evaluate(run)
    phases["test"] = time.perf_counter() - started
    reset_keras()
    epochs = run.epochs()
    result = {"test_accuracy": evaluation["accuracy"], "test_images": evaluation["images"],
              "val_accuracy_last": epochs[-1]["val_accuracy"],
              "val_accuracy_kept": (status.get("best") or {}).get("val_accuracy"),
              "kept_epoch": (status.get("best") or {}).get("global_epoch"),
              "phases": phases, "seconds": sum(phases.values()), "run": str(run.folder)}
    log("accuracy", f"ours {strategy}: test {result['test_accuracy']:.1%} "
                    f"in {result['seconds']:.0f} s")
    return result


def _epochs_text(s) -> str:
    return (f"epochs {s.epochs}, fine-tune {s.fine_tune_epochs}"
            + ("" if (s.epochs, s.fine_tune_epochs) == (30, 100) else " (the chapter: 30, 100)"))


# --------------------------------------------------------------------------------------------
# 5. Accuracy.

def accuracy(s) -> dict:
    name, size = s.accuracy_backbone
    result, rows = {"backbone": f"{name}@{size}", "weights": "imagenet", "counts": s.counts,
                    "epochs": s.epochs, "fine_tune_epochs": s.fine_tune_epochs,
                    "strategies": {}}, []
    for strategy in s.strategies:
        one = ours(s, strategy)
        result["strategies"][strategy] = one
        target = TARGETS.get(strategy) if name == "mobilenet_v2" else None
        rows.append(row("accuracy", f"{strategy}: test accuracy ({_epochs_text(s)})",
                        f"{one['test_accuracy']:.1%} (val {one['val_accuracy_kept']:.1%})",
                        f"chapter reports {REPORTED[strategy]}", None,
                        f"≥ {target:.1%}" if target else "",
                        one["test_accuracy"] >= target if target else None))
        rows.append(row("accuracy", f"{strategy}: wall time, train + evaluate",
                        f"{one['seconds'] - one['phases']['prepare']:.0f} s"))
    result["rows"] = rows
    return result


# --------------------------------------------------------------------------------------------
# 6. Time to accuracy.

def time_to_accuracy(s) -> dict:
    name, size = s.accuracy_backbone
    started = time.perf_counter()
    layout = chapter_layout(s.data, s.counts, fresh_dir(s, "chapter"))
    layout_seconds = time.perf_counter() - started
    result, rows = {"backbone": f"{name}@{size}", "strategies": {}}, []
    for strategy in s.strategies:
        if s.chapter_only:
            one = result["strategies"][strategy] = chapter_alone(s, strategy, layout,
                                                                 layout_seconds)
            rows.append(row("time", f"{strategy}: photos → test accuracy, the chapter's code "
                                    f"alone ({_epochs_text(s)})", "–",
                            f"{one['chapter_seconds']:.0f} s ({one['chapter_cpu_seconds']:.0f}"
                            f" s of CPU), {one['chapter_test_accuracy']:.1%}"))
            continue
        mine = ours(s, strategy)
        ref = _run_chapter(s, strategy, layout)
        theirs = _chapter_phases(ref["phase_seconds"], layout_seconds)
        one = {"ours": mine["phases"], "chapter": theirs,
               "ours_seconds": mine["seconds"], "chapter_seconds": layout_seconds + ref["seconds"],
               "ours_test_accuracy": mine["test_accuracy"],
               "chapter_test_accuracy": ref["test_accuracy"],
               "chapter_val_accuracy": ref["val_accuracy"], "chapter_settings": ref["settings"]}
        result["strategies"][strategy] = one
        log("time", f"{strategy}: ours {one['ours_seconds']:.0f} s, "
                    f"chapter {one['chapter_seconds']:.0f} s")
        rows.append(row("time", f"{strategy}: photos → test accuracy ({_epochs_text(s)})",
                        f"{one['ours_seconds']:.0f} s, {mine['test_accuracy']:.1%}",
                        f"{one['chapter_seconds']:.0f} s, {ref['test_accuracy']:.1%}",
                        one["chapter_seconds"] / one["ours_seconds"]))
        for phase in PHASES:
            if mine["phases"][phase] or theirs[phase]:
                rows.append(row("time", f"{strategy}: {phase}", f"{mine['phases'][phase]:.1f} s",
                                f"{theirs[phase]:.1f} s",
                                theirs[phase] / mine["phases"][phase]
                                if mine["phases"][phase] else None))
    result["rows"] = rows
    return result


def chapter_alone(s, strategy: str, layout, layout_seconds: float) -> dict:
    """The chapter's code for `strategy` without ours beside it (--chapter-only), with its
    process CPU time: ours is then measured apart, so wall times may not compare."""
    cpu = time.process_time()
    ref = _run_chapter(s, strategy, layout)
    cpu = time.process_time() - cpu
    one = {"chapter": _chapter_phases(ref["phase_seconds"], layout_seconds),
           "chapter_seconds": layout_seconds + ref["seconds"], "chapter_cpu_seconds": cpu,
           "chapter_test_accuracy": ref["test_accuracy"],
           "chapter_val_accuracy": ref["val_accuracy"], "chapter_settings": ref["settings"]}
    log("time", f"{strategy}: chapter {one['chapter_seconds']:.0f} s "
                f"({cpu:.0f} s of CPU), {ref['test_accuracy']:.1%}")
    return one


def _run_chapter(s, strategy: str, layout) -> dict:
    """bench/chapter_baseline.py's run_chapter for `strategy` at the bench's settings."""
    name, size = s.accuracy_backbone
    with quiet():
        ref = chapter.run_chapter(
            layout, backbone=name, weights="imagenet", image_size=size,
            strategy=CHAPTER_STRATEGY[strategy], epochs=s.epochs,
            fine_tune_epochs=s.fine_tune_epochs,
            # the whole validation and test splits, as ours reads them (the chapter: half)
            validation_steps=2 * s.counts[1] // chapter.BATCH_SIZE,
            test_steps=2 * s.counts[2] // chapter.BATCH_SIZE,
            fine_tune_from=get_backbone(name).fine_tune_from, seed=s.seed, verbose=0)
    reset_keras()
    return ref


def _chapter_phases(seconds: dict, layout_seconds: float) -> dict:
    """run_chapter's phases in our columns: extracting the test features counts as the test,
    building the conv base as training."""
    get = lambda *keys: sum(seconds.get(k, 0.0) for k in keys)  # noqa: E731
    return {"prepare": layout_seconds,
            "extraction": get("extract_train", "extract_validation"),
            "training": get("build", "head_train", "train", "fine_tune_train"),
            "validation": get("head_validation", "validation", "fine_tune_validation"),
            "test": get("extract_test", "test")}
