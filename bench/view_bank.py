"""Time to accuracy of the view bank against the on-the-fly path (the chapter's way).

Both train the same strategy with the same settings from the same photos; the on-the-fly run
pushes every augmented image through the whole frozen base on every epoch, the bank run pushes
K views of each image through the frozen part once. Wall time counts everything from photos
to test accuracy (features, training, validation, evaluation); each run uses a fresh
workspace, so no cache from another run helps.

    python bench/view_bank.py --data ../shared/data/dogs-vs-cats --backbone mobilenet_v2 \
        --weights imagenet --strategy feature_extraction_augmented --counts 500,250,500 \
        --epochs 6 --views 3 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer_core.datasets import SplitRequest, scan, split  # noqa: E402
from transfer_core.evaluation import evaluate  # noqa: E402
from transfer_core.runs import Run, TrainConfig  # noqa: E402
from transfer_core.training import train  # noqa: E402


def one_run(manifest_path: str, args, views: int, seed: int) -> dict:
    workspace = Path(tempfile.mkdtemp(prefix="viewbank-"))
    config = TrainConfig(manifest=manifest_path, backbone=args.backbone, weights=args.weights,
                         strategy=args.strategy, epochs=args.epochs,
                         fine_tune_epochs=args.fine_tune_epochs, image_size=args.image_size,
                         learning_rate=args.learning_rate, batch_size=args.batch_size,
                         pooling=args.pooling, seed=seed, view_bank=views)
    started = time.perf_counter()
    run = Run.create(workspace, config)
    status = train(run, workspace)
    trained = time.perf_counter() - started
    result = evaluate(run) if status["state"] == "finished" else {}
    epochs = run.epochs()
    bank = sum(p.stat().st_size for p in (workspace / "cache").rglob("*.npy"))
    return {"views": views, "seed": seed, "state": status["state"], "error": status.get("error"),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "train_seconds": round(trained, 1),
            "epoch_seconds": [e["seconds"] for e in epochs],
            "test_accuracy": result.get("accuracy"), "cache_bytes": bank}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats"))
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--strategy", default="feature_extraction_augmented")
    parser.add_argument("--counts", default="500,250,500")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fine-tune-epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--pooling", default="flatten")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--json-out", default=str(ROOT / "docs/benchmarks/view_bank.json"))
    args = parser.parse_args(argv)

    counts = tuple(int(n) for n in args.counts.split(","))
    manifest = split(scan(args.data), SplitRequest(counts=counts, seed=0))
    manifest_path = str(manifest.save(tempfile.mkdtemp(prefix="viewbank-manifest-"), "bench"))
    rows = []
    for seed in args.seeds:
        for views in (0, args.views):  # interleaved: reference, bank, reference, bank …
            row = one_run(manifest_path, args, views, seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"settings": {k: v for k, v in vars(args).items() if k != "json_out"},
               "runs": rows}
    for views in (0, args.views):
        mine = [r for r in rows if r["views"] == views and r["test_accuracy"] is not None]
        if mine:
            summary[f"views_{views}"] = {
                "mean_wall_seconds": sum(r["wall_seconds"] for r in mine) / len(mine),
                "mean_test_accuracy": sum(r["test_accuracy"] for r in mine) / len(mine)}
    if "views_0" in summary and f"views_{args.views}" in summary:
        summary["speedup"] = (summary["views_0"]["mean_wall_seconds"]
                              / summary[f"views_{args.views}"]["mean_wall_seconds"])
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
