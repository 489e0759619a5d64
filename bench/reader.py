"""How to read a cached feature set in shuffled batches with flat memory: three ways compared,
each in a fresh process, over one epoch of a .npy file (batches of 20 random rows, each
batch's rows sorted, as training.ViewBank reads them).

    nice -n 19 python -m bench.reader FEATURES.npy

- memmap: np.load(mmap_mode="r") and fancy indexing (the code before issue 19);
- madvise: the same map, each batch's pages dropped after the copy (MADV_DONTNEED);
- pread: feature_rows.RowReader, os.preadv into an array of its own (what the code uses).

Prints one line per way: seconds (wall and CPU), MB/s, and the peak RSS above the process's
RSS before.
"""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from transfer_core.feature_rows import RowReader  # imports Keras: before any measurement

BATCH = 20


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def batches(rows: int, seed: int = 0):
    order = np.random.default_rng(seed).permutation(rows)
    for start in range(0, rows, BATCH):
        yield np.sort(order[start:start + BATCH])


def read_memmap(path):
    features = np.load(path, mmap_mode="r")
    for rows in batches(len(features)):
        np.asarray(features[rows], dtype="float32")


def read_madvise(path):
    features = np.load(path, mmap_mode="r")
    offset, row_bytes = features.offset, features[0].nbytes
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    whole = np.frombuffer(mapped, np.uint8)
    for rows in batches(len(features)):
        starts = offset + rows * row_bytes
        np.stack([whole[s:s + row_bytes].view(features.dtype) for s in starts]).astype("float32")
        for s in starts:  # drop this batch's pages: page-aligned, covering the rows
            first = s // mmap.PAGESIZE * mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, first, s + row_bytes - first)
    del whole


def read_pread(path):
    reader = RowReader(np.load(path, mmap_mode="r"))
    for rows in batches(len(reader)):
        reader.take(rows)


WAYS = {"memmap": read_memmap, "madvise": read_madvise, "pread": read_pread}


def measure(way: str, path: str) -> dict:
    before = _status("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    WAYS[way](path)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = Path(path).stat().st_size
    return {"way": way, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "mb_per_second": round(size / 1e6 / seconds),
            "peak_rss_growth_mib": round(_status("VmHWM") - before, 1),
            "file_mib": round(size / 2**20)}


def main():
    if sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
        return
    path = sys.argv[1]
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    for way in WAYS:
        done = subprocess.run([sys.executable, "-m", "bench.reader", "--child", way, path],
                              capture_output=True, text=True, check=True)
        print(done.stdout.strip())


if __name__ == "__main__":
    main()
