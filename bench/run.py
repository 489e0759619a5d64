"""Benchmarks: Transfer Lab's speed, memory and accuracy against the chapter's own pipeline
(bench/chapter_baseline.py) on the dogs-vs-cats photos with the chapter's split.

    python bench/run.py --sections extract,cache,train,memory,accuracy,time,app
    python -m bench.run --sections extract --backbones mobilenet_v2 --images 400 --pairs 3

Sections (any subset, in this order; docs/BENCHMARKS.md says what each measures):
  extract   feature-extraction images/s, ours vs the chapter's loop, A B A B …, + bare forward
  cache     a second extraction of the same images (a cache hit)
  train     augmented training images/s per epoch, ours vs the chapter's fit
  memory    peak RSS of an extraction, each in a fresh process, as the image count grows
  accuracy  MobileNetV2 + ImageNet weights: each strategy's validation and test accuracy
  time      photos → test accuracy, ours vs run_chapter, per phase
  app       streamlit start-up to the first page, and one warm prediction

Prints a table (progress goes to stderr) and writes JSON into --json-out: a timestamped file and
latest.json. The defaults are the full benchmark (hours on a 2-core CPU); pass smaller counts
to try it out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/run.py` from anywhere
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transfer_core.runs import STRATEGIES, TrainConfig  # noqa: E402  (after sys.path)

SECTIONS = ("extract", "cache", "train", "memory", "accuracy", "time", "app")
DEFAULT_SIZES = {"vgg16": 150, "mobilenet_v2": 160}  # the brief's: the chapter's 150 for VGG16
PHOTOS_PER_CLASS = 4000


@dataclass(frozen=True)
class Settings:
    """Everything a section reads; validated once by `parse_args`."""

    data: str
    work: str
    sections: tuple[str, ...] = SECTIONS
    backbones: tuple[tuple[str, int], ...] = (("vgg16", 150), ("mobilenet_v2", 160))
    images: int = 1000
    pairs: int = 3
    cache_backbone: tuple[str, int] = ("mobilenet_v2", 160)
    cache_images: int = 8000
    memory_backbone: tuple[str, int] = ("mobilenet_v2", 160)
    memory_images: tuple[int, ...] = (2000, 4000, 8000)
    train_images: int = 4000
    train_epochs: int = 3
    accuracy_backbone: tuple[str, int] = ("mobilenet_v2", 160)
    counts: tuple[int, int, int] = (2000, 1000, 1000)
    # What users get: TrainConfig's defaults (the chapter's epochs, and the view bank).
    epochs: int = TrainConfig.epochs
    fine_tune_epochs: int = TrainConfig.fine_tune_epochs
    strategies: tuple[str, ...] = STRATEGIES
    seed: int = TrainConfig.seed
    # time: the chapter's code alone, when ours was measured apart (e.g. by
    # bench/view_bank.py, beside it on the same CPU)
    chapter_only: bool = False


def parse_args(argv=None) -> tuple[Settings, argparse.Namespace]:
    d = Settings(data="", work="")
    data = (os.environ.get("TRANSFER_LAB_BENCH_DATA")
            or str(ROOT.parent / "shared" / "data" / "dogs-vs-cats"))
    keras_home = os.environ.get("KERAS_HOME") or str(ROOT.parent / "shared/keras-home")
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--data", default=data,
                   help="the flat folder of cat.N.jpg / dog.N.jpg (default: "
                        "$TRANSFER_LAB_BENCH_DATA or ../shared/data/dogs-vs-cats)")
    p.add_argument("--sections", default=",".join(d.sections), help="comma-separated, any of "
                   + ", ".join(SECTIONS))
    p.add_argument("--backbones", default=_names(d.backbones),
                   help="NAME[:SIZE],… for extract, train and app (default: %(default)s)")
    p.add_argument("--images", type=int, default=d.images,
                   help="extract: images per extraction, a multiple of 20 (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=d.pairs, help="extract: A B pairs (default: 3)")
    p.add_argument("--cache-backbone", default=_names([d.cache_backbone]))
    p.add_argument("--cache-images", type=int, default=d.cache_images)
    p.add_argument("--memory-backbone", default=_names([d.memory_backbone]))
    p.add_argument("--memory-images", default=",".join(map(str, d.memory_images)),
                   help="memory: image counts, smallest first (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=d.train_images,
                   help="train: images per epoch, a multiple of 20 (default: the chapter's 4000)")
    p.add_argument("--train-epochs", type=int, default=d.train_epochs,
                   help="train: epochs; the first (tracing) is not counted (default: 3)")
    p.add_argument("--accuracy-backbone", default=_names([d.accuracy_backbone]),
                   help="accuracy and time: backbone with ImageNet weights (default: %(default)s)")
    p.add_argument("--counts", default=",".join(map(str, d.counts)),
                   help="accuracy and time: per class train,validation,test, multiples of 10 "
                        "(default: the chapter's %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="accuracy and time: epochs of the first phase (the chapter's 30)")
    p.add_argument("--fine-tune-epochs", type=int, default=d.fine_tune_epochs,
                   help="accuracy and time: fine-tuning epochs (the chapter's 100)")
    p.add_argument("--strategies", default=",".join(d.strategies))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--chapter-only", action="store_true",
                   help="time: run the chapter's code alone (ours measured apart)")
    p.add_argument("--keras-home", default=keras_home,
                   help="where ImageNet weights are found (default: $KERAS_HOME or "
                        "../shared/keras-home)")
    p.add_argument("--work", default=None,
                   help="keep runs, caches and layouts here (default: a temporary folder)")
    p.add_argument("--json-out", default=str(ROOT / "docs" / "benchmarks"),
                   help="folder for <timestamp>.json and latest.json (default: docs/benchmarks)")
    args = p.parse_args(argv)

    def fail(flag, rule):
        p.error(f"{flag} {rule} (got {getattr(args, flag[2:].replace('-', '_'))!r})")

    sections = _list(args.sections)
    if not sections or set(sections) - set(SECTIONS):
        fail("--sections", f"takes names from {', '.join(SECTIONS)}")
    strategies = _list(args.strategies)
    if not strategies or set(strategies) - set(STRATEGIES):
        fail("--strategies", f"takes names from {', '.join(STRATEGIES)}")
    try:
        backbones = tuple(_backbone(b) for b in _list(args.backbones))
        singles = [_backbone(getattr(args, k)) for k in
                   ("cache_backbone", "memory_backbone", "accuracy_backbone")]
        memory_images = tuple(int(n) for n in _list(args.memory_images))
        counts = tuple(int(n) for n in _list(args.counts))
    except ValueError as exc:
        p.error(str(exc))
    if not backbones:
        fail("--backbones", "needs at least one backbone")
    whole = 2 * PHOTOS_PER_CLASS
    for flag, n in [("--images", args.images), ("--train-images", args.train_images)]:
        if n < 20 or n % 20 or n > whole - 20:
            fail(flag, f"must be a multiple of 20 between 20 and {whole - 20}")
    for flag, values in [("--memory-images", memory_images),
                         ("--cache-images", [args.cache_images])]:
        if not values or any(n < 20 or n % 20 or n > whole for n in values):
            fail(flag, f"must be multiples of 20 between 20 and {whole}")
    if len(counts) != 3 or any(n < 10 or n % 10 for n in counts) or sum(counts) > PHOTOS_PER_CLASS:
        fail("--counts", f"must be three multiples of 10, adding up to at most {PHOTOS_PER_CLASS}")
    if args.pairs < 1 or args.train_epochs < 2 or args.epochs < 1 or args.fine_tune_epochs < 1:
        p.error("--pairs and --epochs must be at least 1, --train-epochs at least 2")
    settings = Settings(
        data=str(Path(args.data).resolve()), work=args.work or "", sections=tuple(
            s for s in SECTIONS if s in sections), backbones=backbones, images=args.images,
        pairs=args.pairs, cache_backbone=singles[0], cache_images=args.cache_images,
        memory_backbone=singles[1], memory_images=memory_images, train_images=args.train_images,
        train_epochs=args.train_epochs, accuracy_backbone=singles[2], counts=counts,
        epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
        strategies=tuple(s for s in STRATEGIES if s in strategies), seed=args.seed,
        chapter_only=args.chapter_only)
    return settings, args


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(backbones) -> str:
    return ",".join(f"{name}:{size}" for name, size in backbones)


def _backbone(text: str) -> tuple[str, int]:
    name, _, size = text.partition(":")
    if name not in DEFAULT_SIZES:  # the two that chapter_baseline can build
        raise ValueError(f"backbones are {' and '.join(DEFAULT_SIZES)}, optionally with a size "
                         f"(e.g. mobilenet_v2:224), not {text!r}")
    return name, int(size) if size else DEFAULT_SIZES[name]


def machine() -> dict:
    """The facts that make two benchmark files comparable (or not)."""
    import keras
    import tensorflow as tf

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    return {"cores": os.cpu_count(), "cpu": model,
            "memory_gib": round(int(meminfo[1]) / 2**20, 1) if meminfo else None,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "platform": platform.platform(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "load_average_at_start": os.getloadavg()}


def table(rows: list[dict]) -> str:
    """The rows as aligned text columns."""
    head = ["section", "measure", "ours", "reference", "speed ×", "target", ""]
    lines = [[r["section"], r["what"], r["ours"], r["reference"],
              f"{r['ratio']:.2f}" if r["ratio"] is not None else "", r["target"],
              {True: "PASS", False: "FAIL", None: ""}[r["ok"]]] for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(head, *lines)]
    def fmt(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def main(argv=None) -> int:
    settings, args = parse_args(argv)
    if args.keras_home and Path(args.keras_home).is_dir():
        os.environ["KERAS_HOME"] = args.keras_home  # before Keras is imported: it reads it once
    work = Path(args.work or tempfile.mkdtemp(prefix="transfer-lab-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(**{**asdict(settings), "work": str(work)})

    from bench import accuracy, app_latency, speed
    from bench.workload import BenchError
    from transfer_core.errors import TransferLabError

    run_section = {"extract": speed.extract, "cache": speed.cache, "train": speed.train,
                   "memory": speed.memory, "accuracy": accuracy.accuracy,
                   "time": accuracy.time_to_accuracy, "app": app_latency.app}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    flags = sys.argv[1:] if argv is None else argv
    report = {"command": " ".join(["python bench/run.py", *flags]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
              "settings": asdict(settings), "complete": False, "sections": {}}
    started = time.perf_counter()
    try:
        for name in settings.sections:
            print(f"[{name}] starting", file=sys.stderr, flush=True)
            section_started = time.perf_counter()
            result = run_section[name](settings)
            result["seconds"] = time.perf_counter() - section_started
            result["load_average_after"] = os.getloadavg()
            report["sections"][name] = result
            write_json(report, Path(args.json_out), stamp)  # a long run keeps what it measured
    except (BenchError, TransferLabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report.update(complete=True, seconds=time.perf_counter() - started)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    path = write_json(report, Path(args.json_out), stamp)
    m = report["machine"]
    print(f"Transfer Lab benchmark, {report['started']}: {m['cores']} cores ({m['cpu']}), "
          f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, load average "
          f"{m['load_average_at_start'][0]:.1f} → {m['load_average_at_end'][0]:.1f}")
    print(f"{report['command']}\n")
    print(table([r for name in settings.sections for r in report["sections"][name]["rows"]]))
    print(f"\nJSON: {path} (and latest.json), {report['seconds']:.0f} s in all")
    return 0


def write_json(report: dict, folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=str)
    (folder / f"{stamp}.json").write_text(text)
    (folder / "latest.json").write_text(text)
    return folder / f"{stamp}.json"


if __name__ == "__main__":
    sys.exit(main())
