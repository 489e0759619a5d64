"""Speed and memory against the chapter's pipeline: feature extraction, the feature cache,
augmented training, and the peak memory of a whole-dataset extraction.

Each section is a function of the settings that returns a dict with its numbers and the
rows it adds to the table. Speed does not depend on the weights' values, so every model here
is randomly initialised (weights none).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench import chapter_baseline as chapter
from bench.workload import (BenchError, chapter_layout, chapter_manifest, fresh_dir, log, median,
                            quiet, reset_keras, row)
from transfer_core import training
from transfer_core.backbones import flops_per_image
from transfer_core.features import FeatureCache, FeatureSpec, build_extractor
from transfer_core.runs import Run, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
# Extraction speed, ours ÷ the chapter's, per backbone; and ours ÷ the bare forward pass.
EXTRACT_TARGETS = {"vgg16": 0.95, "mobilenet_v2": 1.1}
OF_BARE_TARGET = 0.90
CACHE_TARGET_SECONDS = 2.0  # for 8,000 images
MEMORY_TARGET_MIB = 2.5 * 1024
FLAT = 1.10  # "flat": the largest extraction peaks at most 10% above the smallest


# --------------------------------------------------------------------------------------------
# 1. Feature-extraction throughput.

def extract(s) -> dict:
    """Ours (FeatureCache.extract on an empty workspace) against the chapter's loop, A B A B …,
    with the bare forward pass of the same model and the machine's float32 matmul rate
    (measured before and after; the better one is the limit)."""
    result = {"matmul_before": matmul_rate(), "backbones": {}}
    for name, size in s.backbones:
        result["backbones"][f"{name}@{size}"] = _extract_one(s, name, size)
    result["matmul_after"] = matmul_rate()
    gflops = max(result["matmul_before"]["best_gflops"], result["matmul_after"]["best_gflops"])
    rows = []
    for key, one in result["backbones"].items():
        label = f"{key}, {s.images} images"
        target = EXTRACT_TARGETS.get(key.split("@")[0])
        one["ceiling"] = gflops / one["gflop_per_image"]
        rows.append(row("extract", f"{label}: images/s", f"{one['ours']:.1f}",
                        f"{one['chapter']:.1f}", one["ratio"],
                        f"≥ {target}× chapter" if target else "",
                        one["ratio"] >= target if target else None))
        rows.append(row("extract", f"{label}: ours ÷ bare forward, after the first batch",
                        f"{one['of_bare']:.0%} ({one['ours_steady']:.1f}/s)",
                        f"bare {one['bare']:.1f}/s", None, f"≥ {OF_BARE_TARGET:.0%}",
                        one["of_bare"] >= OF_BARE_TARGET))
        rows.append(row("extract", f"{key}: compute limit",
                        f"{one['gflop_per_image']:.2f} GFLOP/image",
                        f"{one['ceiling']:.1f}/s at {gflops:.0f} GFLOP/s", None,
                        f"bare = {one['bare'] / one['ceiling']:.0%} of limit"))
    result["rows"] = rows
    return result


def _extract_one(s, name: str, size: int) -> dict:
    counts = (s.images // 2, 0, 0)
    manifest = chapter_manifest(s.data, counts, fresh_dir(s, "manifest"))
    layout = chapter_layout(s.data, counts, fresh_dir(s, "layout"))
    spec = FeatureSpec(name, "none", size, seed=s.seed)
    pairs = []
    for i in range(s.pairs):
        workspace = fresh_dir(s, "extract")  # empty: a cache miss
        features = FeatureCache(workspace).extract(manifest, "train", spec)
        ours = {"images_per_second": features.images_per_second, "seconds": features.seconds,
                # One batch only (a tiny run) has no rate after the first batch: the whole.
                "steady": features.steady_images_per_second or features.images_per_second}
        del features
        shutil.rmtree(workspace)
        reset_keras()
        with quiet():
            ref = chapter.extract_features_throughput(layout, "train", name, None, size, s.images)
        reset_keras()
        bare = bare_forward(spec, s.images)
        reset_keras()
        pair = {"ours": ours["images_per_second"], "ours_seconds_with_build": ours["seconds"],
                "ours_steady": ours["steady"],
                "chapter": ref["images_per_second"], "bare": bare["images_per_second"],
                "gflop_per_image": bare["gflop_per_image"]}
        pair["ratio"] = pair["ours"] / pair["chapter"]
        # Both after their first batch: bare forward is timed after a warm-up that traces.
        pair["of_bare"] = pair["ours_steady"] / pair["bare"]
        pairs.append(pair)
        log("extract", f"{name}@{size} pair {i + 1}/{s.pairs}: ours {pair['ours']:.1f}/s, "
                       f"chapter {pair['chapter']:.1f}/s (×{pair['ratio']:.2f}), "
                       f"ours after the first batch {pair['ours_steady']:.1f}/s, "
                       f"bare {pair['bare']:.1f}/s")
    gflop = pairs[0]["gflop_per_image"]
    return {"pairs": pairs, "images": s.images, "ours": median(p["ours"] for p in pairs),
            "chapter": median(p["chapter"] for p in pairs),
            "bare": median(p["bare"] for p in pairs),
            "ratio": median(p["ratio"] for p in pairs),
            "of_bare": median(p["of_bare"] for p in pairs),
            "ours_steady": median(p["ours_steady"] for p in pairs),
            "gflop_per_image": gflop,
            "batch_size": {"ours": 32, "chapter": chapter.BATCH_SIZE}}


def bare_forward(spec: FeatureSpec, images: int, batch_size: int = 32) -> dict:
    """The extractor's forward pass on random uint8 input, as run_extractor calls it, after a
    warm-up batch: the ceiling for extraction inside TensorFlow (no decoding, no writing)."""
    extractor = build_extractor(spec)
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    size = spec.resolved().image_size
    batch = np.random.default_rng(0).integers(0, 255, (batch_size, size, size, 3), dtype="uint8")
    forward(batch).numpy()
    batches = max(1, round(images / batch_size))
    started = time.perf_counter()
    for _ in range(batches):
        forward(batch).numpy()
    seconds = time.perf_counter() - started
    return {"images_per_second": batches * batch_size / seconds,
            "gflop_per_image": flops_per_image(extractor) / 1e9}


def matmul_rate(n: int = 2048, repeats: int = 5) -> dict:
    """float32 GFLOP/s of tf.linalg.matmul on n×n matrices: what this CPU computes at best."""
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        rates.append(2 * n ** 3 / (time.perf_counter() - started) / 1e9)
    return {"size": n, "best_gflops": max(rates), "median_gflops": median(rates)}


# --------------------------------------------------------------------------------------------
# 2. The cache.

def cache(s) -> dict:
    """Extract once (a miss), then ask again: what a second request costs (a hit)."""
    name, size = s.cache_backbone
    n = s.cache_images
    workspace = fresh_dir(s, "cache")
    manifest = chapter_manifest(s.data, (n // 2, 0, 0), workspace)
    spec = FeatureSpec(name, "none", size, seed=s.seed)
    miss = FeatureCache(workspace).extract(manifest, "train", spec)
    result = {"images": n, "backbone": f"{name}@{size}", "miss_seconds": miss.seconds,
              "feature_bytes": int(miss.features.nbytes)}
    del miss
    reset_keras()
    hits = []
    for _ in range(5):
        started = time.perf_counter()
        hit = FeatureCache(workspace).extract(manifest, "train", spec)
        hits.append(time.perf_counter() - started)
        if not hit.hit:
            raise BenchError("the second extraction of the same images was not a cache hit")
    started = time.perf_counter()
    np.array(hit.features)  # a hit is a memory map: this is what reading all of it costs
    result.update(hit_seconds=hits, hit_median=median(hits),
                  read_all_seconds=time.perf_counter() - started)
    target = CACHE_TARGET_SECONDS * n / 8000
    log("cache", f"{n} images: miss {result['miss_seconds']:.1f} s, "
                 f"hit {result['hit_median']:.3f} s")
    result["rows"] = [
        row("cache", f"{name}@{size}, {n} images: hit (median of 5)",
            f"{result['hit_median']:.3f} s", f"miss {result['miss_seconds']:.1f} s",
            result["miss_seconds"] / result["hit_median"],
            f"< {target:.2f} s" + ("" if n == 8000 else " (2 s × n/8000)"),
            result["hit_median"] < target),
        row("cache", f"{name}@{size}, {n} images: read all features after a hit",
            f"{result['read_all_seconds']:.2f} s",
            f"{result['feature_bytes'] / 2**20:.0f} MiB"),
    ]
    return result


# --------------------------------------------------------------------------------------------
# 3. Training throughput of the augmented strategy.

def train(s) -> dict:
    """feature_extraction_augmented (ours, epoch seconds from metrics.jsonl) against the
    chapter's augmented fit, the same images per epoch and 20 validation images each; the
    first epoch (tracing) is left out."""
    n, epochs = s.train_images, s.train_epochs
    counts = (n // 2, 10, 0)
    result, rows = {"images_per_epoch": n, "epochs": epochs, "backbones": {}}, []
    for name, size in s.backbones:
        workspace = fresh_dir(s, "train")
        manifest = chapter_manifest(s.data, counts, workspace)
        config = TrainConfig(manifest=manifest.path, backbone=name, weights="none",
                             strategy="feature_extraction_augmented", epochs=epochs,
                             image_size=size, seed=s.seed,
                             view_bank=0)  # on the fly: an epoch does the chapter's work
        run = Run.create_in(workspace / "run", config)
        status = training.train(run, workspace)
        if status["state"] != "finished":
            raise BenchError(f"the training run failed: {status.get('error')} ({run.folder})")
        ours_seconds = [e["seconds"] for e in run.epochs()]
        reset_keras()
        layout = chapter_layout(s.data, counts, fresh_dir(s, "layout"))
        with quiet():
            ref = chapter.train_augmented(layout, name, None, size, steps=n // chapter.BATCH_SIZE,
                                          epochs=epochs, validation_steps=1, verbose=0)
        reset_keras()
        one = {"ours_epoch_seconds": ours_seconds, "chapter_epoch_seconds": ref["epoch_seconds"],
               "ours": median(n / x for x in ours_seconds[1:]),
               "chapter": median(n / x for x in ref["epoch_seconds"][1:])}
        one["ratio"] = one["ours"] / one["chapter"]
        result["backbones"][f"{name}@{size}"] = one
        log("train", f"{name}@{size}: ours {one['ours']:.1f}/s, chapter {one['chapter']:.1f}/s")
        rows.append(row("train", f"{name}@{size}, {n} images × {epochs - 1} epochs: images/s",
                        f"{one['ours']:.1f}", f"{one['chapter']:.1f}", one["ratio"],
                        "≥ 1.0× chapter", one["ratio"] >= 1.0))
    result["rows"] = rows
    return result


# --------------------------------------------------------------------------------------------
# 4. Peak memory.

def memory(s) -> dict:
    """Each extraction in a fresh process (bench/child.py), which reports its own peak RSS."""
    name, size = s.memory_backbone
    runs = []
    for impl in ("ours", "chapter"):
        for n in s.memory_images:
            job = {"impl": impl, "data": str(s.data), "images": n, "backbone": name,
                   "size": size, "seed": s.seed, "work": str(fresh_dir(s, "memory"))}
            runs.append({**job, **_child(job)})
            log("memory", f"{impl} {n} images: peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB "
                          f"(anonymous {runs[-1]['peak_anon_mib']:.0f} MiB)")
    rows = []
    for impl in ("ours", "chapter"):
        mine = [r for r in runs if r["impl"] == impl]
        for r in mine:
            rows.append(row("memory", f"{impl}: {name}@{size}, {r['images']} images: peak RSS",
                            f"{r['peak_rss_mib']:.0f} MiB",
                            f"anon {r['peak_anon_mib']:.0f}, file {r['peak_file_mib']:.0f} MiB"))
        growth = mine[-1]["peak_rss_mib"] / mine[0]["peak_rss_mib"]
        ok = mine[-1]["peak_rss_mib"] < MEMORY_TARGET_MIB and growth <= FLAT
        rows.append(row("memory", f"{impl}: {mine[0]['images']} → {mine[-1]['images']} images",
                        f"×{growth:.2f} peak RSS",
                        f"anon ×{mine[-1]['peak_anon_mib'] / mine[0]['peak_anon_mib']:.2f}",
                        None, f"< {MEMORY_TARGET_MIB / 1024:.1f} GiB, ≤ ×{FLAT}",
                        ok if impl == "ours" else None))
    return {"backbone": f"{name}@{size}", "runs": runs, "rows": rows}


def _child(job: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "bench.child", json.dumps(job)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"the memory child failed ({job['impl']}, {job['images']} images):\n"
                         + done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])
