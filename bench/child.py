"""One extraction in a fresh process that reports its own peak memory: the memory section's
worker, so each measurement starts from an empty process and no other run's memory counts.

    python -m bench.child '{"impl": "ours"|"chapter", "data": DIR, "images": N,
                            "backbone": "mobilenet_v2", "size": 160, "seed": 1337, "work": DIR}'

Prints one JSON line: peak RSS (the kernel's VmHWM), the peaks of its anonymous and file-backed
parts (sampled from /proc/self/status every 50 ms: the feature cache writes through a memory
map, whose pages count as file-backed RSS), the RSS before the extraction, and speed.
Not getrusage's ru_maxrss: Linux carries it over fork and exec, so a child started from the
benchmark's large process reports at least that process's RSS (ru_maxrss_mib shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def status_mib() -> dict:
    """VmRSS, VmHWM (its peak), RssAnon and RssFile of this process, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class PeakSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peaks = status_mib()
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            for key, value in status_mib().items():
                self.peaks[key] = max(self.peaks[key], value)


def main(job: dict) -> dict:
    from bench import chapter_baseline as chapter
    from bench.workload import chapter_layout, chapter_manifest
    from transfer_core.features import FeatureCache, FeatureSpec

    counts = (job["images"] // 2, 0, 0)
    work = Path(job["work"])
    if job["impl"] == "ours":
        manifest = chapter_manifest(job["data"], counts, work)
        spec = FeatureSpec(job["backbone"], "none", job["size"], seed=job["seed"])
    else:
        layout = chapter_layout(job["data"], counts, work / "layout")
    before = status_mib()["VmRSS"]
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    if job["impl"] == "ours":
        result = FeatureCache(work).extract(manifest, "train", spec)
        rate = result.images_per_second
    else:
        rate = chapter.extract_features_throughput(layout, "train", job["backbone"], None,
                                                   job["size"], job["images"])["images_per_second"]
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    return {"peak_rss_mib": status_mib()["VmHWM"],
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_anon_mib": sampler.peaks["RssAnon"], "peak_file_mib": sampler.peaks["RssFile"],
            "rss_before_mib": before, "seconds": seconds, "images_per_second": rate}


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # Keras prints on stdout: keep it for the JSON
        report = main(json.loads(sys.argv[1]))
    print(json.dumps(report))
