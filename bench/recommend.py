"""Chapter settings against recommended settings and a logistic regression on small sets.

Fast feature extraction with MobileNetV2 and the offline ImageNet weights
(KERAS_HOME=/work/shared/keras-home), on subsets of dogs-vs-cats (N training photos per class
drawn by the seed from the chapter's 2,000; the chapter's validation and test photos) and on
foreign-flowers (five classes, a 0.6/0.2/0.2 fractions split by the seed). Prints one line per
run and per set a markdown row: means with their 95% t interval over the seeds, the paired
differences, the search's wall / CPU seconds, and the pooling chosen (how many seeds an
unscreened search, both fits to early stopping, chose the same):

    KERAS_HOME=/work/shared/keras-home python -m bench.recommend --seeds 1337 7 42
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from transfer_core.baseline import baseline
from transfer_core.datasets import Manifest, SplitRequest, load_manifest, scan, split
from transfer_core.evaluation import evaluate
from transfer_core.features import FeatureCache
from transfer_core.predict import load_run_model
from transfer_core.recommend import search
from transfer_core.runs import Run, TrainConfig
from transfer_core.stats import mean_interval, paired_comparison
from transfer_core.training import feature_spec, train

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


def chapter_subset(per_class: int, seed: int, workspace: Path) -> Path:
    """The chapter's split of dogs-vs-cats (cat.0–1999 train, 2000–2999 validation, 3000–3999
    test, per class) with `per_class` training photos drawn by the seed from its 2,000: the
    validation and test photos, and so their cached features, are the same for every subset
    and seed. Built from the file names: the shared set is the one the chapter's preset
    scans."""
    root = DATA / "dogs-vs-cats"
    rows = []
    for name in ("cat", "dog"):
        drawn = random.Random(f"{seed}:{name}").sample(range(2000), per_class)
        rows += [(str(root / f"{name}.{i}.jpg"), name, "train") for i in sorted(drawn)]
        rows += [(str(root / f"{name}.{i}.jpg"), name, "validation") for i in range(2000, 3000)]
        rows += [(str(root / f"{name}.{i}.jpg"), name, "test") for i in range(3000, 4000)]
    request = {"preset": None, "counts": [per_class, 1000, 1000], "fractions": None,
               "seed": seed}
    return Manifest(root=str(root), classes=["cat", "dog"], rows=rows, request=request).save(
        workspace, f"dogs-vs-cats-{per_class}-{seed}")


def head_accuracy(run: Run, workspace: Path) -> float:
    """Test accuracy of the saved model's head on the cached test features: the base's
    output for those photos, which evaluate() would compute again image by image."""
    manifest = load_manifest(run.config.manifest)
    found = FeatureCache(workspace).extract(manifest, "test", feature_spec(run.config))
    probabilities = load_run_model(run).get_layer("head").predict(
        np.asarray(found.features), batch_size=256, verbose=0)
    predicted = (probabilities[:, 0] > 0.5 if probabilities.shape[1] == 1
                 else probabilities.argmax(axis=1))
    return float(np.mean(predicted.astype(int) == np.asarray(found.labels)))


def one(workspace: Path, manifest: Path, settings: str, seed: int, size: int,
        check: bool = False) -> dict:
    config = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", image_size=size,
                         settings=settings, seed=seed, precision="float32")
    run = Run.create(workspace, config, f"{manifest.stem}-{settings}-{seed}")
    started = time.perf_counter()
    status = train(run, workspace)
    if status["state"] != "finished":
        raise SystemExit(f"{run.name}: {status}")
    seconds = time.perf_counter() - started
    accuracy = head_accuracy(run, workspace)
    if check:  # once: the shortcut gives evaluate()'s figure
        print(f"check: {run.name} head on cached features {100 * accuracy:.2f}%, evaluate() "
              f"{100 * evaluate(run)['accuracy']:.2f}%", flush=True)
    search = run.config.recommendation
    return {"accuracy": accuracy, "seconds": seconds, "search_seconds": search.get("seconds"),
            "search_cpu": search.get("cpu_seconds"), "chosen": chosen_head(search),
            "tried": tried_text(search), "run": run}


def chosen_head(search: dict) -> str | None:
    """The candidate a search chose (linear, avg, flatten or chapter); None without one."""
    return search.get("chosen_head") if search else None


def tried_text(search: dict) -> str:
    """Each head tried: validation cross-entropy and accuracy at its best epoch, epochs."""
    if not search:
        return ""
    heads = [f"{t['head']} {t['val_loss']:.3f}/{100 * t['val_accuracy']:.1f}% "
             f"({t['best_epoch']}/{t['epochs_run']} ep, {t['cpu_seconds']:.1f} s CPU"
             f"{mcnemar_text(t)})" for t in search["tried"]]
    decay = search["weight_decay"]
    return "; ".join(heads) + f"; C {decay['C']:g} ({decay['cpu_seconds']:.1f} s CPU)"


def mcnemar_text(tried: dict) -> str:
    """A candidate against the linear head: validation photos gained / lost, McNemar's p."""
    found = tried.get("against_linear")
    return (f", +{found['gained']}/-{found['lost']} of {found['photos']} p {found['p']:.3g}"
            if found else "")


def unscreened_choice(run: Run, workspace: Path) -> str:
    """The head the search would choose with every fit run to early stopping."""
    manifest, cache = load_manifest(run.config.manifest), FeatureCache(workspace)
    train_set, validation = (cache.extract(manifest, name, feature_spec(run.config))
                             for name in ("train", "validation"))
    found = search(run.config, (train_set.features, train_set.labels),
                   (validation.features, validation.labels), len(manifest.classes), screen=False)
    return chosen_head(found)


def measure(name: str, workspace: Path, manifest: Path, seed: int, size: int,
            check: bool = False) -> dict:
    chapter = one(workspace, manifest, "chapter", seed, size, check)
    recommended = one(workspace, manifest, "recommended", seed, size)
    started = time.perf_counter()
    logistic = baseline(recommended["run"], workspace=workspace)  # features cached: the fit
    logistic_seconds = time.perf_counter() - started
    row = {"chapter": chapter["accuracy"], "recommended": recommended["accuracy"],
           "logistic": logistic["accuracy"], "search_s": recommended["search_seconds"],
           "search_cpu": recommended["search_cpu"],
           "chapter_train_s": chapter["seconds"], "recommended_train_s": recommended["seconds"],
           "logistic_s": logistic_seconds, "chosen": recommended["chosen"],
           "unscreened": unscreened_choice(recommended["run"], workspace),
           "test_images": logistic["images"]}
    print(f"{name} seed {seed}: chapter {100 * row['chapter']:.1f}%, recommended "
          f"{100 * row['recommended']:.1f}%, logistic {100 * row['logistic']:.1f}% "
          f"(test {row['test_images']}); search {row['search_s']:.1f} s "
          f"({row['search_cpu']:.1f} s CPU), runs {row['chapter_train_s']:.0f} s / "
          f"{row['recommended_train_s']:.0f} s, logistic fit {row['logistic_s']:.1f} s "
          f"(C {logistic['C']:g}); chosen {row['chosen']}; tried {recommended['tried']}; "
          f"unscreened search: {row['unscreened']}; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    return row


def summary(name: str, rows: list[dict]) -> None:
    """A markdown row: each mean with its t interval over the seeds, and the paired
    differences the targets are about."""
    def cell(key):
        m = mean_interval([r[key] for r in rows])
        return f"{100 * m.mean:.1f} ± {100 * (m.high - m.mean):.1f}"

    def difference(a, b):
        m = paired_comparison([r[a] for r in rows], [r[b] for r in rows]).difference
        return f"{100 * m.mean:+.1f} ({100 * m.low:+.1f} to {100 * m.high:+.1f})"

    chosen = ", ".join(sorted({r["chosen"] for r in rows}))
    agree = sum(r["chosen"] == r["unscreened"] for r in rows)
    print(f"== {name}, {len(rows)} seed(s), {rows[0]['test_images']} test photos", flush=True)
    print(f"| {name} | {cell('chapter')} | {cell('recommended')} | {cell('logistic')} | "
          f"{difference('recommended', 'chapter')} | {difference('recommended', 'logistic')} | "
          f"{np.mean([r['search_s'] for r in rows]):.1f} s / "
          f"{np.mean([r['search_cpu'] for r in rows]):.1f} s | {chosen} ({agree}/{len(rows)}) |",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 7, 42])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--skip-dogs", action="store_true")
    parser.add_argument("--skip-flowers", action="store_true")
    parser.add_argument("--workspace", help="kept between runs (default: a new temporary one)")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"MobileNetV2 {args.size} px, KERAS_HOME={os.environ.get('KERAS_HOME')}", flush=True)
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="bench-recommend-"))
    check = True
    if not args.skip_flowers:
        scanned = scan(DATA / "foreign-flowers")
        rows = []
        for seed in args.seeds:
            manifest = split(scanned, SplitRequest(fractions=(0.6, 0.2, 0.2), seed=seed)).save(
                workspace, f"foreign-flowers-{seed}")
            rows.append(measure("foreign-flowers", workspace, manifest, seed, args.size, check))
            check = False
        summary("foreign-flowers (5 classes)", rows)
    if not args.skip_dogs:
        for n in args.per_class:
            rows = [measure(f"dogs-vs-cats {n}/class", workspace,
                            chapter_subset(n, seed, workspace), seed, args.size)
                    for seed in args.seeds]
            summary(f"dogs-vs-cats {n}/class", rows)


if __name__ == "__main__":
    main()
