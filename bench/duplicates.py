"""Duplicates in a real photo set: how many pairs, how many false ones, and what finding them costs.

1. Cost: the scan's check (a full decode of each photo) with and without the fingerprints
   (SHA-256 of the bytes, pHash, the 32×32 grey picture), one process and in the scan's
   process pool, runs interleaved; then the pair search over all fingerprints.
2. Pairs among the photos, and where they sit in the chapter's split (within one split, or
   across two: a leak). With --sheet, their thumbnails side by side in a PNG to look at.
3. Planted copies of --planted random photos, each edited several ways (resized, JPEG quality
   10-85, PNG, WebP) and scanned together with all the photos: the share of copies found with
   their original (recall), and the pairs that are not a copy and its original (false).
4. How close distinct photos come: the closest hash distances, and how many pairs the hash
   alone would flag at each limit, with the correlation that rejects them.
5. Similar-looking synthetic pictures (the demo set, the tests' colour patches): pairs flagged.

    python bench/duplicates.py ../shared/data/dogs-vs-cats --planted 300 --sheet /tmp/pairs.png
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer_core import duplicates  # noqa: E402
from transfer_core.datasets import SplitRequest, scan, split  # noqa: E402
from transfer_core.images import check_image  # noqa: E402

EDITS = [("half size, JPEG 50", 0.5, "JPEG", 50), ("3/4 size, JPEG 30", 0.75, "JPEG", 30),
         ("same size, JPEG 40", 1.0, "JPEG", 40), ("double size, JPEG 85", 2.0, "JPEG", 85),
         ("quarter size, JPEG 75", 0.25, "JPEG", 75), ("half size, JPEG 10", 0.5, "JPEG", 10),
         ("half size, PNG", 0.5, "PNG", None), ("0.7 size, WebP 50", 0.7, "WEBP", 50)]


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores"


def timed_pool(function, paths: list[str], workers: int) -> float:
    """The scan's own pool (datasets._check_all): fork, the same chunk size."""
    chunk = max(16, min(256, len(paths) // (workers * 8)))
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(function, paths, chunksize=chunk))
    return time.perf_counter() - started


def cost(paths: list[str], repeats: int) -> None:
    serial = paths[:1000]
    for path in serial:  # the page cache: every run reads from memory
        Path(path).read_bytes()
    rows = {"check only": [], "check + fingerprints": []}
    pooled = {"check only": [], "check + fingerprints": []}
    for _ in range(repeats):
        for name, function in (("check only", check_image),
                               ("check + fingerprints", duplicates.check_and_fingerprint)):
            started = time.process_time()  # CPU time: other processes' load does not count
            for path in serial:
                function(path)
            rows[name].append((time.process_time() - started) / len(serial) * 1000)
            pooled[name].append(timed_pool(function, paths, os.cpu_count() or 1))
    print(f"\n1. Cost (CPU time of {len(serial)} photos in one process; wall time of all "
          f"{len(paths)} in the scan's pool of {os.cpu_count()}; median of {repeats}; load "
          f"average before: {os.getloadavg()[0]:.1f})")
    for name in rows:
        print(f"   {name:22s} {statistics.median(rows[name]):.3f} ms CPU/photo · "
              f"{statistics.median(pooled[name]):.2f} s for {len(paths)}")
    extra = statistics.median(pooled["check + fingerprints"]) - statistics.median(
        pooled["check only"])
    print(f"   extra for the fingerprints: {extra:+.2f} s in the pool "
          f"({100 * extra / statistics.median(pooled['check only']):+.0f}%)")


def pairs_in(folder: Path, sheet: Path | None) -> list[duplicates.Fingerprint]:
    report = scan(folder)
    started = time.perf_counter()
    prints = [duplicates.check_and_fingerprint(e.path)[1] for e in report.images]
    pairs = duplicates.find_pairs([e.path for e in report.images], prints)
    search = time.perf_counter() - started
    found = duplicates.summary(duplicates.locate(pairs, split(report, SplitRequest()).rows))
    print(f"\n2. Pairs among {len(report.images)} photos (scan {report.seconds:.1f} s in all)")
    print(f"   exact {found['exact']}, near {found['near']}; in the chapter split: "
          f"{len(found['pairs']) - found['leaks']} within one split, {found['leaks']} across "
          f"two (leaks)")
    for pair in found["pairs"]:
        print(f"   {pair['kind']:5s} {pair['distance']} bits  {Path(pair['first']).name} "
              f"({pair['first_split']}) ~ {Path(pair['second']).name} ({pair['second_split']})")
    print(f"   (fingerprints again + pair search: {search:.2f} s)")
    if sheet:
        contact_sheet(pairs, sheet)
    return report, prints


def contact_sheet(pairs, path: Path) -> None:
    sheet = Image.new("RGB", (420, 205 * max(len(pairs), 1)), "white")
    for row, pair in enumerate(pairs):
        for column, photo in enumerate((pair.first, pair.second)):
            image = Image.open(photo).convert("RGB")
            image.thumbnail((200, 200))
            sheet.paste(image, (column * 210, row * 205))
    sheet.save(path)
    print(f"   thumbnails of the pairs: {path}")


def edited(path: str, scale: float, fmt: str, quality: int | None) -> bytes:
    image = Image.open(path).convert("RGB")
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    out = io.BytesIO()
    image.resize(size, Image.BILINEAR).save(out, fmt, **({"quality": quality} if quality else {}))
    return out.getvalue()


def planted(report, prints, count: int, seed: int) -> None:
    paths = [e.path for e in report.images]
    known = {frozenset((p.first, p.second)) for p in duplicates.find_pairs(paths, prints)}
    chosen = np.random.default_rng(seed).choice(len(paths), count, replace=False)
    print(f"\n3. Planted copies of {count} random photos, scanned with all {len(paths)}")
    with tempfile.TemporaryDirectory() as folder:
        for name, scale, fmt, quality in EDITS:
            copies, copy_prints, original_of = [], [], {}
            for n, i in enumerate(chosen):
                copy = Path(folder) / f"{n}.{fmt.lower()}"
                copy.write_bytes(edited(paths[i], scale, fmt, quality))
                copies.append(str(copy))
                copy_prints.append(duplicates.check_and_fingerprint(copy)[1])
                original_of[str(copy)] = paths[i]
            pairs = duplicates.find_pairs(paths + copies, prints + copy_prints)
            found = {p.second for p in pairs if original_of.get(p.second) == p.first}
            false = [p for p in pairs if not _true_pair(p, original_of, known)]
            print(f"   {name:22s} found {len(found)}/{count} ({100 * len(found) / count:.1f}%),"
                  f" false pairs {len(false)}")


def _true_pair(pair, original_of: dict, known: set) -> bool:
    """Two copies of one original, a copy and its original, or copies of a known pair."""
    first, second = (original_of.get(p, p) for p in (pair.first, pair.second))
    return first == second or frozenset((first, second)) in known


def closeness(prints) -> None:
    hashes = np.array([p.phash for p in prints], dtype=np.uint64)
    greys = np.frombuffer(b"".join(p.grey for p in prints), np.uint8).reshape(len(prints), -1)
    counts, best = np.zeros(65, np.int64), {}
    for start in range(0, len(hashes), 512):
        distances = np.bitwise_count(hashes[start:start + 512, None] ^ hashes[None, :])
        rows, later = np.nonzero(np.triu(np.ones_like(distances, bool), start + 1))
        counts += np.bincount(distances[rows, later].ravel(), minlength=65)
        near = distances[rows, later] <= 12
        for i, j in zip(rows[near], later[near]):
            d = int(distances[i, j])
            c = float(duplicates._correlations(greys[[start + i]], greys[[j]])[0])
            best.setdefault(d, []).append(c)
    print(f"\n4. How close photos come (all {int(counts.sum()):,} pairs; those 0 bits apart are "
          "the copies of part 2)")
    for d in range(0, 13, 2):
        if counts[d]:
            corr = best.get(d, [])
            flagged = sum(c >= duplicates.MIN_CORRELATION for c in corr)
            print(f"   {d:2d} bits apart: {int(counts[d]):5d} pairs; grey correlation "
                  f"{min(corr):.3f} … {max(corr):.3f}; {flagged} at ≥ "
                  f"{duplicates.MIN_CORRELATION}")


def synthetic() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import COLOURS, colour_image

    from transfer_core.sources import make_demo_dataset

    print("\n5. Similar-looking synthetic pictures")
    with tempfile.TemporaryDirectory() as folder:
        demo = make_demo_dataset(Path(folder) / "demo")
        report = scan(demo)
        print(f"   demo set ({len(report.images)} pictures): {len(report.duplicates)} pairs")
        patches = Path(folder) / "patches"
        for c, (name, rgb) in enumerate(COLOURS.items()):
            (patches / name).mkdir(parents=True)
            for i in range(60):
                colour_image(rgb, 128, seed=1000 * c + i).save(patches / name / f"{i}.png")
        report = scan(patches)
        prints = [duplicates.check_and_fingerprint(e.path)[1] for e in report.images]
        hash_only = duplicates.find_pairs([e.path for e in report.images], prints,
                                          min_correlation=-1.0)
        print(f"   colour patches (3 × 60, 128 px): {len(report.duplicates)} pairs; "
              f"{len(hash_only)} on the hash alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--planted", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=Path, default=None)
    parser.add_argument("--parts", default="12345", help="which parts to run, e.g. 1 or 245")
    args = parser.parse_args()
    print(f"Duplicates benchmark on {cpu()}; NEAR_BITS {duplicates.NEAR_BITS}, "
          f"MIN_CORRELATION {duplicates.MIN_CORRELATION}")
    report, prints = pairs_in(args.folder, args.sheet)
    if "1" in args.parts:
        cost([e.path for e in report.images], args.repeats)
    if "3" in args.parts:
        planted(report, prints, args.planted, args.seed)
    if "4" in args.parts:
        closeness(prints)
    if "5" in args.parts:
        synthetic()


if __name__ == "__main__":
    main()
