"""Memory and time against the dataset's size (issue 19): scan, split, extraction, 2 head
epochs and evaluation of a synthetic Kaggle-style dataset at several sizes, each stage in a
fresh process that reports its own peak memory.

    nice -n 10 python -m bench.scale --sizes 8000 25000 100000 [--root /tmp/scale-bench]
    python -m bench.scale --sizes 25000 --stages train --code /work/main   # another checkout

The photos (64×64 JPEGs, cat.N.jpg / dog.N.jpg, the two classes tinted apart) are made once
under a pool folder and linked into one folder per size; each size has its own workspace, kept
until the next run with that size (--clean removes it after, to free the disk: 100,000 photos
cache 12.8 GB of float32 features). MobileNetV2 with random weights at 160 px: its flattened
features are 5×5×1280 = 32,000 floats per photo, so holding a split in memory would show.

--photos picks the generator, each with its own folders under ROOT:
- varied (the default; pool-varied, photos-varied-N, work-varied-N): random smooth light on
  the tint, so each photo's low frequencies, which its perceptual hash reads, are its own;
  pairs of photos whose hashes are close stay near none at any size, as in real photo sets.
- lookalike (pool, photos-N, work-N; rounds 1 to 6 of issue 19): noise and a lighter square
  at one of 32×32 places. The hashes cluster by the square's place, so the close pairs the
  scan must check grow as the square of the photos (2 a photo at 8,000, 26 at 100,000).
The scan's row counts those pairs (close_pairs: hashes within NEAR_BITS, each checked by
correlating two grey pictures).

--copies plants near-copies, as real photo sets have a small share of them (1% by default for
varied, none for lookalike): that share of each class's photos, picked from the index, are
copies of an earlier photo of the class (each source copied once), in equal parts exact copies,
JPEG re-compressions at quality 20 and copies resized to a quarter and back. The copies get a
pool of their own (pool-varied-copies1 for 1%; the other photos are linked from pool-varied)
and the folders say the share (photos-varied-copies1-N, work-varied-copies1-N). The scan's row
then reports how many of the planted copies the scan found, by kind.

--layout class-folders puts the same photos in one sub-folder per class (photos-…-classes-N/
cat/cat.1.jpg), the other layout the scan reads; kaggle (the default) keeps them in one folder.

Peak memory is the kernel's VmHWM of the stage's process (not getrusage's ru_maxrss, which
Linux carries over fork and exec: bench/child.py), with the peaks of its anonymous and
file-backed parts sampled every 50 ms (the pages of a read memory map are file-backed RSS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("scan", "split", "extract", "train", "evaluate")
# --fill: the split from the names and the cache filled with random rows, no scan or extraction
FILLED = ("listed", "fill", "train", "evaluate")
HERE = Path(__file__).resolve().parent.parent  # this checkout


# --- the photos --------------------------------------------------------------------------------

TINTS = ((190, 110, 60), (60, 110, 190))  # cat, dog: the classes are easy to tell apart


def lookalike_photo(label: int, index: int, size: int = 64):
    """A noisy patch tinted by class with a lighter square at one of 32×32 places: distinct
    pixels, but look-alikes in the low frequencies (their hashes cluster by the place)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([label, index])
    tint = np.array(TINTS[label])
    pixels = np.clip(tint + rng.normal(0, 40, (size, size, 3)), 0, 255)
    x, y = rng.integers(0, size // 2, 2)
    pixels[y:y + size // 3, x:x + size // 3] += 60
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))


# The 8×8 lowest cosine waves: the frequencies a perceptual hash reads (duplicates.py's pHash
# keeps 8×8 of its 32×32 grey picture's, the same waves across the photo).
_LOW_WAVES = 8


def varied_photo(label: int, index: int, size: int = 64):
    """The class's tint under random smooth light, with a little noise: the light is the
    8×8 lowest cosine waves with independent random amplitudes (no place or pattern drawn
    from a finite set), so each photo's hash is about as random as 64 bits with 32 set can
    be, and close pairs stay near none at any count."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([label, index])
    n = np.arange(size)
    waves = np.cos(np.pi * np.arange(_LOW_WAVES)[:, None] * (2 * n + 1) / (2 * size))
    amplitudes = rng.normal(0, 8, (_LOW_WAVES, _LOW_WAVES))
    amplitudes[0, 0] = 0  # the tint is the photo's mean brightness
    light = waves.T @ amplitudes @ waves  # about ±32 (one standard deviation) in each pixel
    pixels = np.array(TINTS[label]) + light[..., None] + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))


PHOTOS = {"varied": varied_photo, "lookalike": lookalike_photo}
CLASSES = ("cat", "dog")

# The planted copies' kinds, in equal parts: the scan's exact path (same bytes) and its near
# path (hashes within NEAR_BITS, grey pictures correlated at MIN_CORRELATION or more). On 2,000
# varied photos, re-saved at quality 20 the copies stayed within 6 bits and correlated at
# 0.988 or more (quality 10: 0.972, at the 0.97 limit); resized to 16×16 and back, within 2
# bits and 0.992 or more.
COPY_KINDS = ("exact", "jpeg", "resized")
_COPY_SEED = 1  # each index's draws: numpy.random.default_rng([label, index, _COPY_SEED])


def copy_plan(label: int, count: int, share: float) -> dict[int, tuple[int, str]]:
    """{index: (source index, kind)} of the copies among a class's first `count` photos:
    each index after the first is a copy with chance `share`, of an earlier photo that is no
    copy and has no copy yet (so each planted copy makes one duplicate pair). Drawn in index
    order, each from its own seed, so a smaller count's plan is the start of a larger one's."""
    import numpy as np

    plan, sources = {}, set()
    for index in range(1, count if share else 0):
        rng = np.random.default_rng([label, index, _COPY_SEED])
        if rng.random() >= share:
            continue
        kind = COPY_KINDS[rng.integers(len(COPY_KINDS))]
        for _ in range(8):  # at 1% the first draw almost always fits
            source = int(rng.integers(index))
            if source not in plan and source not in sources:
                plan[index] = (source, kind)
                sources.add(source)
                break
    return plan


def copy_photo(source: Path, kind: str, target: Path) -> None:
    """Writes at `target` a copy of the photo file `source` of the given kind."""
    from PIL import Image

    if kind == "exact":
        shutil.copyfile(source, target)
        return
    with Image.open(source) as image:
        if kind == "jpeg":
            image.save(target, quality=20)
        else:  # resized: a quarter of the side, then back up
            size = image.size
            smaller = image.resize((size[0] // 4, size[1] // 4), Image.LANCZOS)
            smaller.resize(size, Image.LANCZOS).save(target, quality=90)


def copies_tag(share: float) -> str:
    return f"-copies{100 * share:g}" if share else ""


def folders(root: Path, kind: str, count: int, copies: float = 0.0,
            layout: str = "kaggle") -> tuple[Path, Path, Path]:
    """The pool, the photos' folder and the workspace of `count` photos of a generator with
    a share of copies in a layout: their own for each, so they never mix (lookalike without
    copies keeps the names of rounds 1 to 6). The copies' own pool is the pool's name with
    copies_tag."""
    tag, copied = ("" if kind == "lookalike" else f"-{kind}"), copies_tag(copies)
    copied += "-classes" if layout == "class-folders" else ""
    return (root / f"pool{tag}", root / f"photos{tag}{copied}-{count}",
            root / f"work{tag}{copied}-{count}")


def photos(root: Path, count: int, kind: str = "varied", copies: float = 0.0,
           layout: str = "kaggle") -> tuple[Path, dict[str, tuple[str, str]]]:
    """count // 2 cats and dogs of the generator `kind`, linked from its pool (made when
    missing) into the folder for that count (into cat/ and dog/ in it with class-folders), a
    share `copies` of them planted copies (from a pool of their own). Returns the folder and
    the copies: {copy's name: (source's, kind)}."""
    pool, folder, _ = folders(root, kind, count, copies, layout)
    copy_pool = pool.with_name(pool.name + copies_tag(copies))
    for made in (pool, copy_pool, folder):
        made.mkdir(parents=True, exist_ok=True)
    planted = {}
    for label, name in enumerate(CLASSES):
        plan = copy_plan(label, count // 2, copies)
        inside = folder / name if layout == "class-folders" else folder
        inside.mkdir(exist_ok=True)
        for i in range(count // 2):
            source_index, copy_kind = plan.get(i, (i, None))
            source = pool / f"{name}.{source_index}.jpg"
            if not source.exists():
                PHOTOS[kind](label, source_index).save(source, quality=90)
            if copy_kind:
                planted[f"{name}.{i}.jpg"] = (source.name, copy_kind)
                copied = copy_pool / f"{name}.{i}.jpg"
                if not copied.exists():
                    copy_photo(source, copy_kind, copied)
                source = copied
            target = inside / f"{name}.{i}.jpg"
            if not target.exists():
                os.link(source, target)
    return folder, planted


def found_copies(planted: dict[str, tuple[str, str]], work: Path) -> dict:
    """The planted copies among the duplicate pairs the scan reported (work/duplicates.tsv),
    by kind: found when the pair (copy, source) is reported as the scan should (exact for an
    exact copy, near for the others). `other_pairs`: reported pairs that are none of those."""
    reported = {}
    for line in (work / "duplicates.tsv").read_text().splitlines():
        first, second, kind = line.split("\t")
        reported[frozenset((first, second))] = kind
    found = dict.fromkeys(COPY_KINDS, 0)
    for copy, (source, kind) in planted.items():
        if reported.pop(frozenset((copy, source)), None) == ("exact" if kind == "exact"
                                                             else "near"):
            found[kind] += 1
    planted_by_kind = {k: sum(kind == k for _, kind in planted.values()) for k in COPY_KINDS}
    return {"planted": planted_by_kind, "found": found, "other_pairs": len(reported)}


# --- one stage in its own process --------------------------------------------------------------

def run_stage(job: dict) -> dict:
    """What the child process does: one stage, timed, with its peak memory."""
    from bench.child import PeakSampler, status_mib

    work = Path(job["work"])
    before = status_mib()["VmRSS"]
    sampler = PeakSampler()
    sampler.start()
    started, cpu = time.perf_counter(), _cpu_seconds()
    detail = STAGE_BODIES[job["stage"]](job, work)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    sampler.done.set()
    sampler.join()
    return {"stage": job["stage"], "photos": job["photos"], "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2), "peak_rss_mib": round(status_mib()["VmHWM"], 1),
            "peak_anon_mib": round(sampler.peaks["RssAnon"], 1),
            "peak_file_mib": round(sampler.peaks["RssFile"], 1),
            "rss_before_mib": round(before, 1), **detail}


def _cpu_seconds() -> float:
    """This process's CPU time and its finished children's (the scan decodes in a pool)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _scan(job, work):
    import pickle

    from transfer_core import duplicates
    from transfer_core.datasets import scan

    from bench.child import status_mib

    close = _count_close_pairs(duplicates)
    report = scan(job["data"])
    scanned = status_mib()["VmHWM"]  # the peak before the benchmark's own pickling of the report
    with open(work / "scan.pickle", "wb") as file:  # as a stream: no copy of the bytes held
        pickle.dump(report, file)
    with open(work / "duplicates.tsv", "w") as file:  # names, for found_copies
        for pair in report.duplicates:
            file.write(f"{Path(pair.first).name}\t{Path(pair.second).name}\t{pair.kind}\n")
    return {"images": len(report.images), "duplicates": len(report.duplicates),
            "close_pairs": close[0] if close else None,
            "peak_rss_scan_only_mib": round(scanned, 1)}


def _count_close_pairs(duplicates) -> list[int] | None:
    """Counts, in the list returned, the pairs the scan's search of close hashes hands to
    the pair phase (each gets its grey pictures correlated): a running sum over its batches.
    None for a checkout without that search."""
    search = getattr(duplicates, "_close_hashes", None)
    if search is None:
        return None
    counted = [0]

    def count(batch):
        counted[0] += len(batch[0])
        return batch

    # map, not a generator of ours: a paused generator would hold the last batch while the
    # scan confirms it (the search itself holds none: up to 0.5 MB on the look-alikes)
    duplicates._close_hashes = lambda hashes, near_bits: map(count, search(hashes, near_bits))
    return counted


def _split(job, work):
    import pickle

    from transfer_core.datasets import SplitRequest, split

    # As a stream, not read whole first: the benchmark's own cost, not the product's (the app
    # and the CLI split the report in the process that scanned).
    with open(work / "scan.pickle", "rb") as file:
        report = pickle.load(file)
    manifest = split(report, SplitRequest(fractions=(0.8, 0.1, 0.1), seed=0))
    path = manifest.save(work, "scale")
    (work / "manifest-path").write_text(str(path))
    # counts(), not files(): the lists of paths files() makes are the next stages' work
    return {"counts": {s: sum(n.values()) for s, n in manifest.counts().items()}}


def _config(work):
    from transfer_core.runs import TrainConfig

    return TrainConfig(manifest=(work / "manifest-path").read_text(), backbone="mobilenet_v2",
                       weights="none", image_size=160, strategy="feature_extraction", epochs=2,
                       precision="float32")


def _extract(job, work):
    from transfer_core.datasets import load_manifest
    from transfer_core.features import FeatureCache
    from transfer_core.training import feature_spec

    config = _config(work)
    manifest, cache = load_manifest(config.manifest), FeatureCache(work)
    spec = feature_spec(config, precision="float32")  # the key training looks up
    seconds = {}
    for split in ("train", "validation", "test"):
        found = cache.extract(manifest, split, spec)
        seconds[split] = round(found.seconds, 2)
    return {"split_seconds": seconds, "feature_shape": list(found.features.shape[1:])}


def _train(job, work):
    from transfer_core.runs import Run
    from transfer_core.training import train

    run = Run.create(work, _config(work))
    status = train(run, work)
    if status["state"] != "finished":
        raise RuntimeError(f"the run ended {status['state']}: {status.get('error')}")
    (work / "run-path").write_text(str(run.folder))
    epochs = [e["seconds"] for e in run.epochs()]
    return {"epoch_seconds": epochs, "val_accuracy": run.epochs()[-1]["val_accuracy"]}


def _evaluate(job, work):
    from transfer_core.evaluation import evaluate
    from transfer_core.runs import Run

    run = Run(Path((work / "run-path").read_text()))
    result = evaluate(run, force=True)
    baseline = result.get("baseline") or {}
    return {"accuracy": round(result["accuracy"], 4),
            "baseline_accuracy": baseline.get("accuracy", baseline.get("error"))}


def _listed(job, work):
    """The split without the scan: 0.8/0.1/0.1 of each class by a seeded shuffle of the
    names (for --fill, when there is no time to decode every photo)."""
    import numpy as np

    from transfer_core.datasets import Manifest

    rows, per_class = [], job["photos"] // 2
    for label in ("cat", "dog"):
        order = np.random.default_rng(0).permutation(per_class)
        for place, i in enumerate(order.tolist()):
            split = ("train" if place < 0.8 * per_class else
                     "validation" if place < 0.9 * per_class else "test")
            rows.append((str(Path(job["data"]) / f"{label}.{i}.jpg"), label, split))
    manifest = Manifest(root=job["data"], classes=["cat", "dog"], rows=rows,
                        request={"fractions": [0.8, 0.1, 0.1], "seed": 0})
    path = manifest.save(work, "scale")
    (work / "manifest-path").write_text(str(path))
    return {"counts": {s: len(manifest.files(s)[0]) for s in ("train", "validation", "test")}}


def _fill(job, work):
    """Not an extraction: each split's cache entry written with repeated seeded random rows
    of MobileNetV2's shape, under the key training looks up, to measure the stages after
    extraction at sizes whose extraction there is no time for."""
    import numpy as np

    from transfer_core.datasets import load_manifest
    from transfer_core.features import ExtractionSpeed, FeatureCache
    from transfer_core.training import feature_spec

    config = _config(work)
    manifest, cache = load_manifest(config.manifest), FeatureCache(work)
    spec = feature_spec(config, precision="float32").resolved()
    block = np.random.default_rng(0).normal(size=(256, 5, 5, 1280)).astype("float32")

    def compute(out):
        for start in range(0, len(out), len(block)):
            out.append(block[:len(out) - start])
        return ExtractionSpeed(len(out), 1.0, len(out), 1.0)

    for split in ("train", "validation", "test"):
        paths, labels = manifest.files(split)
        cache._compute(cache.key(paths, labels, spec), paths, labels, spec,
                       (len(paths), *block.shape[1:]), compute, None)
    return {"filled": True}


STAGE_BODIES = {"scan": _scan, "split": _split, "extract": _extract, "train": _train,
                "evaluate": _evaluate, "listed": _listed, "fill": _fill}


def child(job: dict, code: str) -> dict:
    """One stage in a fresh process, importing transfer_core from the checkout `code`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([code, str(HERE)]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           json.dumps(job)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"stage {job['stage']} at {job['photos']} photos failed:\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the table ---------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    lines = ["| photos | stage | seconds | CPU s | µs/photo (wall) | peak RSS MiB | "
             "anon / file MiB |", "|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['photos']:,} | {r['stage']} | {r['seconds']:.1f} | "
                     f"{r['cpu_seconds']:.1f} | {1e6 * r['seconds'] / r['photos']:.0f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['peak_anon_mib']:.0f} / "
                     f"{r['peak_file_mib']:.0f} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    """Per stage, largest size against smallest: peak RSS, and time per photo."""
    sizes = sorted({r["photos"] for r in rows})
    if len(sizes) < 2:
        return ""
    lines = [f"Largest ({sizes[-1]:,}) against smallest ({sizes[0]:,}) size:"]
    by = {(r["photos"], r["stage"]): r for r in rows}
    for stage in STAGES:
        small, large = by.get((sizes[0], stage)), by.get((sizes[-1], stage))
        if small and large:
            per = [r["seconds"] / r["photos"] for r in (small, large)]
            cpu = [r["cpu_seconds"] / r["photos"] for r in (small, large)]
            lines.append(f"- {stage}: peak RSS ×{large['peak_rss_mib'] / small['peak_rss_mib']:.3f}"
                         f", wall time per photo ×{per[1] / per[0]:.3f}, CPU time per photo "
                         f"×{cpu[1] / cpu[0]:.3f}")
    close = [f"{r['photos']:,}: {r['close_pairs'] / r['photos']:.4f}" for r in rows
             if r["stage"] == "scan" and r.get("close_pairs") is not None]
    if close:  # what the scan's pair phase must check, growing with the data, not the code
        lines.append("- the scan's close pairs a photo: " + ", ".join(close))
    for r in rows:
        if r["stage"] == "scan" and r.get("copies"):
            planted, found = r["copies"]["planted"], r["copies"]["found"]
            lines.append(f"- {r['photos']:,}: found {sum(found.values())} of "
                         f"{sum(planted.values())} planted copies ("
                         + ", ".join(f"{k} {found[k]}/{planted[k]}" for k in COPY_KINDS)
                         + f"), {r['copies']['other_pairs']} other duplicate pairs")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 25000, 100000])
    parser.add_argument("--stages", nargs="+", choices=list(STAGE_BODIES))
    parser.add_argument("--fill", action="store_true",
                        help="skip the scan and the extraction: " + _fill.__doc__.split(":")[0])
    parser.add_argument("--root", default="/tmp/scale-bench")
    parser.add_argument("--photos", choices=list(PHOTOS), default="varied",
                        help="the generator, each with its own pool and folders (see above)")
    parser.add_argument("--copies", type=float,
                        help="the share of each class's photos planted as copies of others, "
                             "at most 0.2 (default: 0.01 for varied, 0 for lookalike)")
    parser.add_argument("--layout", choices=("kaggle", "class-folders"), default="kaggle",
                        help="the photos in one folder, or in one sub-folder per class")
    parser.add_argument("--code", default=str(HERE), help="the checkout whose transfer_core runs")
    parser.add_argument("--clean", action="store_true", help="remove each size's workspace after")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints: stdout is for the JSON
            report = run_stage(json.loads(args.child))
        print(json.dumps(report))
        return
    if args.copies is None:
        args.copies = 0.01 if args.photos == "varied" else 0.0
    if not 0 <= args.copies <= 0.2:
        parser.error(f"--copies must be between 0 and 0.2. Received: {args.copies}")
    stages = args.stages or (FILLED if args.fill else STAGES)
    root, rows = Path(args.root), []
    print(f"load average before: {os.getloadavg()}", flush=True)
    for size in args.sizes:
        started = time.perf_counter()
        data, planted = photos(root, size, args.photos, args.copies, args.layout)
        print(f"{size:,} {args.photos} photos ({len(planted)} planted copies) ready in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        work = folders(root, args.photos, size, args.copies, args.layout)[2]
        work.mkdir(exist_ok=True)
        for stage in stages:
            row = child({"stage": stage, "photos": size, "data": str(data), "work": str(work)},
                        args.code)
            row["load_average"] = os.getloadavg()
            if stage == "scan":
                row["copies"] = found_copies(planted, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.clean:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    print(ratios(rows))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    if "--child" in sys.argv:  # run as a file: the checkout to measure comes first on the path
        sys.path[:1] = os.environ["PYTHONPATH"].split(os.pathsep)
    main()
