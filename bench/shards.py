"""Sharded extraction on this machine: N `extract --shard I/N` processes at once, then
`extract --merge`, against one `extract` process over the same split: wall time, CPU time of
the processes, the extraction's own seconds, and whether the merged features.npy is the very
file one process wrote (docs/BENCHMARKS.md, "Sharded extraction (issue 19)").

    KERAS_HOME=../shared/keras-home .venv/bin/python bench/shards.py \\
        --photos ../shared/data/dogs-vs-cats --images 400 --shards 2

The first `--images` photos (half cats, half dogs) are linked into a folder of their own and
split into a training split of all of them; they are read once first, so that neither side
pays the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # run as a script: the package is the project's


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _extract(common: list[str], workspace: Path, *more: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    args = [sys.executable, "-m", "transfer_core", "extract", *common, "--workspace",
            str(workspace), "--json", *more]
    return subprocess.Popen(args, cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _measure(processes) -> dict:
    cpu, started = _children_cpu(), time.perf_counter()
    outputs = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode:
            raise SystemExit(err[-2000:])
        outputs.append(json.loads(out))
    return {"wall_seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(_children_cpu() - cpu, 2),
            "extraction_seconds": [o["seconds"] for o in outputs]}


def _photo_folder(photos: Path, images: int, root: Path) -> Path:
    folder = root / "photos"
    folder.mkdir()
    for kind in ("cat", "dog"):
        for i in range(images // 2):
            name = f"{kind}.{i}.jpg"
            (folder / name).symlink_to((photos / name).resolve())
            (folder / name).read_bytes()  # into the page cache, for both sides alike
    return folder


def _manifest(folder: Path, per_class: int, workspace: Path) -> Path:
    from transfer_core.datasets import SplitRequest, scan, split

    request = SplitRequest(counts=(per_class, 0, 0), seed=0)  # every photo in training
    return split(scan(folder, workers=1), request).save(workspace, "shards-bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", default="160")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (in /tmp)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="shards-bench-"))
    folder = _photo_folder(args.photos, args.images, root)
    manifest = _manifest(folder, args.images // 2, root / "one")
    common = ["--data", str(manifest), "--split", "train", "--backbone", args.backbone,
              "--weights", args.weights, "--image-size", args.image_size, "--batch-size",
              args.batch_size, "--precision", "float32"]
    load = {"before": os.getloadavg()}
    one = _measure([_extract(common, root / "one")])
    sharded = _measure([_extract(common, root / "sharded", "--shard", f"{i}/{args.shards}")
                        for i in range(args.shards)])
    merge = _measure([_extract(common, root / "sharded", "--merge")])
    load["after"] = os.getloadavg()
    key = next((root / "one/cache/features").glob("*/features.npy")).parent.name
    files = [root / side / "cache/features" / key / "features.npy" for side in ("one", "sharded")]
    print(json.dumps({
        "images": args.images, "shards": args.shards, "backbone": args.backbone,
        "image_size": args.image_size, "batch_size": args.batch_size,
        "cpu": _cpu_name(), "cores": os.cpu_count(),
        "one_process": one, "sharded": sharded, "merge": merge,
        "sharded_plus_merge_wall": round(sharded["wall_seconds"] + merge["wall_seconds"], 2),
        "merged_file_identical": files[0].read_bytes() == files[1].read_bytes(),
        "load_average": load, "folder": str(root) if args.keep else None}, indent=1))
    if not args.keep:
        shutil.rmtree(root)  # two copies of the features: hundreds of MB


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
