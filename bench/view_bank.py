"""Time to accuracy of the view bank against the on-the-fly path (the chapter's way).

Both train the same strategy with the same settings from the same photos; the on-the-fly run
pushes every augmented image through the whole frozen base on every epoch, the bank run pushes
K views of each image through the frozen part once. Wall time counts everything from the split
to test accuracy (features, training, validation, evaluation); each run uses a fresh
workspace, so no cache from another run helps. Runs are interleaved: reference, bank, per seed.

Each run's time is split into phases, so the next gain is visible:
  bank        pushing the K views and the validation images through the frozen part (bank only)
  training    the epochs minus their validation: base + head on the fly, or what trains on cache
  validation  fit()'s validation passes (timed by a callback, measurement only)
  test        evaluate(): load the saved full model, run the test split
  other       building and compiling models, saving the best model

`--extrapolate 2000,1000,1000:30:100` also prints what each run would take at those counts per
class and epochs, scaling each phase by its measured time per image and epoch (the first epoch,
which traces, is averaged in). Use it where a reference run does not fit in a session.

    python bench/view_bank.py --backbone mobilenet_v2 --weights imagenet \
        --strategy feature_extraction_augmented --counts 2000,1000,1000 --epochs 3 --views 3 \
        --seeds 1 2 3 --extrapolate 2000,1000,1000:30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.epoch_rules import (EpochSnapshots, replay_validation,  # noqa: E402
                                rule_accuracies)
from bench.workload import ValidationTimer, chapter_manifest, reset_keras  # noqa: E402
from transfer_core import training  # noqa: E402
from transfer_core.evaluation import evaluate  # noqa: E402
from transfer_core.runs import Run, TrainConfig  # noqa: E402

PHASES = ("bank", "training", "validation", "test", "other")


class StepTimer:
    """Measurement only: the seconds `training.train` spends in each step it names (through
    its `timer` hook); "features" is computing or reading the features: the bank."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, step: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started


def one_run(manifest_path: str, args, views, seed: int) -> dict:
    """One run, timed; `views` is the bank's K (0: on the fly) or "auto"."""
    workspace = Path(tempfile.mkdtemp(prefix="viewbank-", dir=args.work))
    config = TrainConfig(manifest=manifest_path, backbone=args.backbone, weights=args.weights,
                         strategy=args.strategy, epochs=args.epochs,
                         fine_tune_epochs=args.fine_tune_epochs, image_size=args.image_size,
                         learning_rate=args.learning_rate, batch_size=args.batch_size,
                         pooling=args.pooling, seed=seed, view_bank=views,
                         blend_reach=args.blend_reach,
                         fine_tune_on_bank=args.fine_tune_on_bank)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()  # the code measured (branches merge)
    load_before, cpu_before = os.getloadavg(), time.process_time()
    started = time.perf_counter()
    run = Run.create(workspace, config)
    steps, validation_timer, snapshots = StepTimer(), ValidationTimer(), EpochSnapshots()
    status = training.train(run, workspace, callbacks=[validation_timer, snapshots], timer=steps)
    bank, validation = steps.seconds.get("features", 0.0), validation_timer.seconds
    trained = time.perf_counter() - started
    result = evaluate(run) if status["state"] == "finished" else {}
    # The snapshots are measurement only: their copying is taken out of the wall time.
    wall = time.perf_counter() - started - snapshots.seconds
    cpu, load_after = time.process_time() - cpu_before, os.getloadavg()
    epochs = run.epochs()
    epoch_total = sum(e["seconds"] for e in epochs)
    phases = {"bank": bank, "training": epoch_total - sum(validation),
              "validation": sum(validation), "test": wall + snapshots.seconds - trained}
    phases["other"] = trained - snapshots.seconds - phases["bank"] - epoch_total
    rules = rule_accuracies(run, snapshots) if status["state"] == "finished" else {}
    replay = replay_validation(run, snapshots) if args.check_rules else None
    reset_keras()
    return {"views": views, "view_bank_used": run.status().get("view_bank"),
            "blend_views": args.blend_reach is not None, "blend_reach": args.blend_reach,
            "fine_tune_on_bank": args.fine_tune_on_bank,
            "strategy": args.strategy, "seed": seed, "commit": commit,
            "state": status["state"], "error": status.get("error"),
            "wall_seconds": round(wall, 1), "process_cpu_seconds": round(cpu, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "snapshot_seconds": round(snapshots.seconds, 1),
            "phases": {k: round(v, 1) for k, v in phases.items()},
            "epochs": [{"phase": e["phase_name"], "global_epoch": e["global_epoch"],
                        "seconds": e["seconds"], "validation_seconds": round(v, 3),
                        **{k: e[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}}
                       for e, v in zip(epochs, validation)],
            "test_accuracy": result.get("accuracy"),
            "kept_epoch": run.status().get("saved_epoch"), "monitor": run.config.monitor,
            "rules": rules.get("rules"), "rules_seconds": rules.get("seconds"),
            "test_loss": result.get("loss"), **({"replay": replay} if replay else {}),
            "cache_bytes": sum(p.stat().st_size for p in (workspace / "cache").rglob("*.npy")),
            "run": str(run.folder)}


def extrapolate(row: dict, counts, target_counts, target_epochs: dict) -> float:
    """The run's wall time at other counts (per class) and epochs per phase: every phase
    scaled by its measured time per image (and per epoch); `other` stays as it was."""
    train, val, test = (t / c for t, c in zip(target_counts, counts))
    views = max(row["views"], 1)
    bank = row["phases"]["bank"] * (target_counts[0] * views + target_counts[1]) / (
        counts[0] * views + counts[1]) if row["phases"]["bank"] else 0.0
    seconds = bank + row["phases"]["test"] * test + row["phases"]["other"]
    for phase, epochs in target_epochs.items():
        mine = [e for e in row["epochs"] if e["phase"] == phase]
        if not mine:
            continue
        training_epoch = sum(e["seconds"] - e["validation_seconds"] for e in mine) / len(mine)
        validation_epoch = sum(e["validation_seconds"] for e in mine) / len(mine)
        seconds += epochs * (training_epoch * train + validation_epoch * val)
    return seconds


def summarise(rows: list[dict], args) -> dict:
    summary = {}
    for views in (0, args.views):
        mine = [r for r in rows if r["views"] == views and r["test_accuracy"] is not None]
        if not mine:
            continue
        def mean(key, mine=mine):  # bound now: `mine` is the loop's
            return sum(r[key] for r in mine) / len(mine)

        summary[f"views_{views}"] = {
            "runs": len(mine), "mean_wall_seconds": round(mean("wall_seconds"), 1),
            "mean_test_accuracy": mean("test_accuracy"),
            "mean_phases": {p: round(sum(r["phases"][p] for r in mine) / len(mine), 1)
                            for p in PHASES}}
        if args.extrapolate:
            summary[f"views_{views}"]["mean_extrapolated_seconds"] = round(
                sum(r["extrapolated_seconds"] for r in mine) / len(mine), 1)
    reference, bank = summary.get("views_0"), summary.get(f"views_{args.views}")
    if reference and bank:
        summary["speedup"] = round(reference["mean_wall_seconds"] / bank["mean_wall_seconds"], 2)
        summary["accuracy_difference_points"] = round(
            100 * (bank["mean_test_accuracy"] - reference["mean_test_accuracy"]), 2)
        if args.extrapolate:
            summary["extrapolated_speedup"] = round(
                reference["mean_extrapolated_seconds"] / bank["mean_extrapolated_seconds"], 2)
    return summary


def print_table(rows: list[dict], args) -> None:
    header = ["seed", "path", "wall", *PHASES, "test accuracy", "disk"]
    if args.extrapolate:
        header.append(f"at {args.extrapolate}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [str(r["seed"]), f"view bank K={r['views']}" if r["views"] else "on the fly",
                 f"{r['wall_seconds']:.0f} s", *(f"{r['phases'][p]:.0f} s" for p in PHASES),
                 f"{r['test_accuracy']:.2%}" if r["test_accuracy"] is not None else r["state"],
                 f"{r['cache_bytes'] / 1e6:.0f} MB" if r["cache_bytes"] else "–"]
        if args.extrapolate:
            cells.append(f"{r['extrapolated_seconds'] / 60:.0f} min")
        print("| " + " | ".join(cells) + " |")


def _views(text: str):
    return text if text == "auto" else int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats"))
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--strategy", default="feature_extraction_augmented")
    parser.add_argument("--counts", default="500,250,500", help="per class: train,val,test")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fine-tune-epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--pooling", default="flatten")
    parser.add_argument("--views", type=_views, default=3, help='K, or "auto" (issue 15)')
    parser.add_argument("--blend-views", action="store_true",
                        help="fine_tune: blend two views per photo in the fine-tuning phase "
                             "(TrainConfig.blend_reach 0 unless --blend-reach says otherwise)")
    parser.add_argument("--blend-reach", type=float, default=None,
                        help="with --blend-views: λ from [-R, 1 + R) (default 0)")
    parser.add_argument("--fine-tune-on-bank", action="store_true",
                        help="fine_tune: the fine-tuning phase reads the bank too (before "
                             "session 11 every bank run did; now the head phase alone does)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--paths", default="reference,bank",
                        help="which runs per seed: reference (on the fly), bank, or both")
    parser.add_argument("--extrapolate", default="",
                        help="COUNTS:EPOCHS[:FINE_TUNE_EPOCHS], e.g. 2000,1000,1000:30:100")
    parser.add_argument("--check-rules", action="store_true",
                        help="tiny runs: replay every epoch's weights on the validation split")
    parser.add_argument("--work", default=None, help="keep workspaces here (default: /tmp)")
    parser.add_argument("--json-out", default=str(ROOT / "docs/benchmarks/view_bank.json"))
    args = parser.parse_args(argv)
    args.blend_reach = (args.blend_reach or 0.0) if args.blend_views else None

    counts = tuple(int(n) for n in args.counts.split(","))
    target = None
    if args.extrapolate:
        parts = args.extrapolate.split(":")
        target = (tuple(int(n) for n in parts[0].split(",")),
                  {"head": int(parts[1]), "fine_tune": int(parts[2]) if len(parts) > 2 else 0})
    manifest = chapter_manifest(args.data, counts, Path(tempfile.mkdtemp(prefix="viewbank-")))
    paths = [{"reference": 0, "bank": args.views}[p] for p in args.paths.split(",")]
    rows = []
    for seed in args.seeds:
        for views in paths:
            row = one_run(str(manifest.path), args, views, seed)
            if target:
                row["extrapolated_seconds"] = round(extrapolate(row, counts, *target), 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            summary = {"settings": {k: v for k, v in vars(args).items() if k != "json_out"},
                       "runs": rows, **summarise(rows, args)}
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(summary, indent=1))
    print_table(rows, args)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "settings")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
