"""Chapter settings against recommended settings and a logistic regression on small sets.

Fast feature extraction with MobileNetV2 and the offline ImageNet weights
(KERAS_HOME=/work/shared/keras-home), on subsets of dogs-vs-cats (N training photos per class,
--val and --test per class, a counts split shuffled by the seed) and on foreign-flowers (five
classes, a 0.6/0.2/0.2 fractions split). Prints one line per run and a mean per set:

    KERAS_HOME=/work/shared/keras-home python -m bench.recommend --seeds 1337 7 42
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from transfer_core.baseline import baseline
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.evaluation import evaluate
from transfer_core.runs import Run, TrainConfig
from transfer_core.training import train

DATA = Path(os.environ.get("TRANSFER_LAB_SHARED", "/work/shared")) / "data"


def subset_folder(root: Path, per_class: int) -> Path:
    """The first `per_class` cats and dogs, linked into a folder of their own (a scan of the
    whole 8,000 photos would decode them all)."""
    folder = root / f"dogs-vs-cats-{per_class}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("cat", "dog"):
        for i in range(per_class):
            link = folder / f"{name}.{i}.jpg"
            if not link.exists():
                link.symlink_to(DATA / "dogs-vs-cats" / f"{name}.{i}.jpg")
    return folder


def one(workspace: Path, manifest: Path, settings: str, seed: int, size: int) -> dict:
    config = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", image_size=size,
                         settings=settings, seed=seed)
    run = Run.create(workspace, config, f"{manifest.stem}-{settings}-{seed}")
    started = time.perf_counter()
    status = train(run, workspace)
    if status["state"] != "finished":
        raise SystemExit(f"{run.name}: {status}")
    seconds = time.perf_counter() - started
    result = evaluate(run)
    search = run.config.recommendation
    return {"accuracy": result["accuracy"], "seconds": seconds,
            "search_seconds": search.get("seconds"), "chosen": search.get("chosen"),
            "baseline": result["baseline"], "run": run}


def measure(name: str, workspace: Path, scanned, request: SplitRequest, size: int) -> dict:
    manifest = split(scanned, request).save(workspace, f"{name}-{request.seed}")
    chapter = one(workspace, manifest, "chapter", request.seed, size)
    recommended = one(workspace, manifest, "recommended", request.seed, size)
    started = time.perf_counter()
    logistic = baseline(recommended["run"], workspace=workspace)  # features cached: the fit
    logistic_seconds = time.perf_counter() - started
    row = {"chapter": chapter["accuracy"], "recommended": recommended["accuracy"],
           "logistic": logistic["accuracy"], "search_s": recommended["search_seconds"],
           "chapter_train_s": chapter["seconds"], "recommended_train_s": recommended["seconds"],
           "logistic_s": logistic_seconds, "chosen": recommended["chosen"],
           "test_images": logistic["images"]}
    print(f"{name} seed {request.seed}: chapter {100 * row['chapter']:.1f}%, recommended "
          f"{100 * row['recommended']:.1f}%, logistic {100 * row['logistic']:.1f}% "
          f"(test {row['test_images']}); search {row['search_s']:.1f} s, runs "
          f"{row['chapter_train_s']:.0f} s / {row['recommended_train_s']:.0f} s, logistic fit "
          f"{row['logistic_s']:.1f} s; chosen {row['chosen']}", flush=True)
    return row


def summary(name: str, rows: list[dict]) -> None:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("chapter", "recommended", "logistic", "search_s")}
    print(f"== {name}, mean of {len(rows)} seed(s): chapter {100 * mean['chapter']:.1f}%, "
          f"recommended {100 * mean['recommended']:.1f}%, logistic {100 * mean['logistic']:.1f}%,"
          f" search {mean['search_s']:.1f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=250)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--skip-dogs", action="store_true")
    parser.add_argument("--skip-flowers", action="store_true")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"MobileNetV2 {args.size} px, KERAS_HOME={os.environ.get('KERAS_HOME')}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-recommend-"))
    workspace = root / "workspace"
    if not args.skip_dogs:
        pool = subset_folder(root, max(args.per_class) + args.val + args.test)
        scanned = scan(pool)
        for n in args.per_class:
            rows = [measure(f"dogs-vs-cats {n}/class", workspace, scanned,
                            SplitRequest(counts=(n, args.val, args.test), seed=seed), args.size)
                    for seed in args.seeds]
            summary(f"dogs-vs-cats {n}/class", rows)
    if not args.skip_flowers:
        scanned = scan(DATA / "foreign-flowers")
        rows = [measure("foreign-flowers", workspace, scanned,
                        SplitRequest(fractions=(0.6, 0.2, 0.2), seed=seed), args.size)
                for seed in args.seeds]
        summary("foreign-flowers (5 classes)", rows)


if __name__ == "__main__":
    main()
