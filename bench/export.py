"""Export a real model and time one photo in each format (issue 14).

Through the command line, as a user would: split the folder with the chapter's preset, train
MobileNetV2 (offline ImageNet weights) with fast feature extraction, evaluate it, export every
format. Then prints the file sizes, the parity table, and the latency of one photo (batch 1,
already decoded and resized) in each format, loaded by its own runtime: the median of --repeat
calls after 5 warm-up calls.

    KERAS_HOME=../shared/keras-home python bench/export.py ../shared/data/dogs-vs-cats \
        --workspace /tmp/export-bench --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cli(*args: str) -> dict:
    """One `python -m transfer_core ... --json` call; its JSON document."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "transfer_core", *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:2])} failed: {done.stderr.strip().splitlines()[-1]}")
    print(f"{args[0]}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return json.loads(done.stdout)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor() or "unknown CPU"


def latency_ms(predict, photo, repeat: int) -> float:
    for _ in range(5):
        predict(photo)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        predict(photo)
        times.append(time.perf_counter() - started)
    times.sort()
    return 1000 * times[len(times) // 2]


def latencies(result: dict, photo_path: Path, repeat: int) -> dict[str, float]:
    import zipfile

    from transfer_core.export import load_photo, loaded_predictor

    folder = Path(result["zip"]).with_suffix("")
    with zipfile.ZipFile(result["zip"]) as archive:
        archive.extractall(folder)
    size = result["input"]["shape"][1]
    photo = load_photo(photo_path, size)[None]
    return {fmt: latency_ms(loaded_predictor(fmt, folder / entry["path"].rstrip("/")),
                            photo, repeat)
            for fmt, entry in result["files"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the Dogs vs Cats folder (Kaggle names)")
    parser.add_argument("--workspace", required=True, help="a fresh folder, e.g. under /tmp")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per format")
    parser.add_argument("--run", help="export this existing run instead of training one")
    args = parser.parse_args()
    ws = ["--workspace", args.workspace]
    run = args.run
    if not run:
        manifest = cli("split", args.data, "--preset", "chapter", "--name", "chapter", *ws)
        trained = cli("train", "--data", manifest["manifest"], "--backbone", "mobilenet_v2",
                      "--weights", "imagenet", "--strategy", "feature_extraction",
                      "--epochs", str(args.epochs), *ws)
        run = trained["name"]
    cli("evaluate", run, *ws)
    started = time.perf_counter()
    result = cli("export", run, *ws)
    seconds = time.perf_counter() - started

    from transfer_core.export import parity_text

    print(f"CPU: {cpu_name()} (shared with other jobs while measured)")
    print(f"run {run}: test accuracy {result['test_accuracy']}")
    print(f"export of all formats, incl. parity on {result['parity'][0]['images']} test photos: "
          f"{seconds:.0f} s (command line, TensorFlow start-up included)")
    for fmt, entry in result["files"].items():
        print(f"  {fmt:<12} {entry['path']:<20} {entry['bytes'] / 1e6:6.2f} MB, "
              f"written in {entry['seconds_to_write']:.1f} s")
    print(f"  zip {result['zip_bytes'] / 1e6:.2f} MB")
    print(parity_text(result["parity"]))
    print(f"latency of one photo (median of {args.repeat} after 5 warm-up calls):")
    photo = Path(args.data) / "cat.3000.jpg"  # a test photo of the chapter's split
    for fmt, ms in latencies(result, photo, args.repeat).items():
        print(f"  {fmt:<12} {ms:7.2f} ms")


if __name__ == "__main__":
    main()
