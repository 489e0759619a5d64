"""How long the "recommended" search takes on cached features (issue 18's target: under 15 s
for 1,000 training photos on 2 cores), wall and process CPU time.

MobileNetV2 with the offline ImageNet weights (KERAS_HOME=/work/shared/keras-home), fast feature
extraction at 160 px, N training and --val validation photos per class of dogs-vs-cats; the
features are extracted once into --workspace (kept between runs), then the search runs --repeat
times. `--against FILE` times another recommend.py (e.g. an older one from git) interleaved
with the current one, so both see the same load:

    git show HEAD~1:transfer_core/recommend.py > /tmp/old.py
    KERAS_HOME=/work/shared/keras-home python -m bench.recommend_speed --against /tmp/old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from pathlib import Path

import numpy as np

from bench.recommend import subset_folder
from transfer_core import recommend
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.features import FeatureCache
from transfer_core.runs import TrainConfig
from transfer_core.training import feature_spec


def cached_features(workspace: Path, per_class: int, val: int, size: int, seed: int):
    """(train, validation, config): the features of a counts split, from the cache."""
    folder = subset_folder(workspace / "photos", per_class + val)
    manifest = split(scan(folder), SplitRequest(counts=(per_class, val, 0), seed=seed)).save(
        workspace, f"speed-{per_class}-{val}-{seed}")
    config = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", image_size=size,
                         seed=seed, settings="recommended")
    cache = FeatureCache(workspace)
    from transfer_core.datasets import load_manifest

    loaded = load_manifest(manifest)
    found = [cache.extract(loaded, name, feature_spec(config)) for name in ("train", "validation")]
    return [(f.features, f.labels) for f in found] + [config]


def load_module(path: str):
    """Another recommend.py, imported under its own name (its relative imports resolved in
    transfer_core)."""
    spec = importlib.util.spec_from_file_location("transfer_core._recommend_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(module, config, train, validation) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    found = module.search(config, train, validation, 2)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "chosen": found["chosen"],
            "tried": [(t.get("head", t["pooling"]), round(t["val_loss"], 4), t["best_epoch"],
                       t["epochs_run"], t.get("stopped_behind"), t.get("cpu_seconds"))
                      for t in found["tried"]],
            "weight_decay": found.get("weight_decay", {}).get("cpu_seconds")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", help="another recommend.py, timed interleaved")
    parser.add_argument("--workspace", default="/tmp/bench-recommend-speed")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load {os.getloadavg()}", flush=True)
    train, validation, config = cached_features(Path(args.workspace), args.per_class, args.val,
                                                args.size, args.seed)
    modules = {"current": recommend}
    if args.against:
        modules = {"against": load_module(args.against), **modules}
    times = {name: [] for name in modules}
    for i in range(args.repeat):
        for name, module in modules.items():
            result = timed(module, config, train, validation)
            times[name].append(result)
            print(f"{name} #{i + 1}: {result['wall']:.1f} s wall, {result['cpu']:.1f} s CPU; "
                  f"tried {result['tried']} (head, val loss, best epoch, epochs, stopped, CPU s); "
                  f"C choice {result['weight_decay']} s CPU; chosen {result['chosen']}; load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    for name, results in times.items():
        print(f"== {name}: median {np.median([r['wall'] for r in results]):.1f} s wall, "
              f"{np.median([r['cpu'] for r in results]):.1f} s CPU over {len(results)} "
              f"({len(train[1])} training, {len(validation[1])} validation photos)", flush=True)


if __name__ == "__main__":
    main()
