"""Sharded extraction: N workers each compute one contiguous slice of a split's features into a
shard file, and a merge concatenates the shards, in order, into the ordinary cache entry under
the ordinary key, so that training then finds a cache hit (README, "Scaling out").

Shards cut the split at whole batches of `batch_size` rows: every shard runs exactly the
batches an unsharded extraction at that batch size runs, so the merged features.npy is the
same, byte for byte, as one process would write (tests/test_shards.py). Each shard is two
files in the shard folder (the workspace's feature cache, or a folder every worker can
write): `<key>.shard-I-of-N.npy`, the rows, and `<key>.shard-I-of-N.json`, what made them;
the .json is written last, so a shard without it is not finished.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .distribute import cluster_from_environment
from .errors import DatasetError
from .feature_rows import RowReader
from .features import (ExtractionSpeed, NpyWriter, build_extractor, check_disk, run_extractor,
                       writing_cache)
from .storage import (DamagedFile, process_alive, read_json_object, temp_writer,
                      write_json_atomic)

# Rows copied at once by the merge: its memory stays flat in the split's size.
MERGE_ROWS = 256


class ShardError(DatasetError):
    """A shard that cannot be made or merged as asked: missing, made for other features, or
    holding the wrong rows."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (from 0) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, environ=None) -> Shard:
    """"I/N" (0 <= I < N), or "auto": this worker's index and the number of workers in
    TF_CONFIG, the same cluster description multi-worker training reads."""
    if text == "auto":
        cluster = cluster_from_environment(environ)
        if cluster is None:
            raise ShardError("--shard auto takes this worker's index and the number of workers "
                             "from TF_CONFIG, which is not set: set it, or give the shard as "
                             "I/N (e.g. --shard 0/2).")
        return Shard(cluster.index, len(cluster.workers))
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ShardError(f"--shard must be I/N, shard I (from 0 to N-1) of N, or auto (from "
                         f"TF_CONFIG); got {text!r}.")
    return Shard(int(index), int(count))


def shard_rows(images: int, batch_size: int, shard: Shard) -> range:
    """The rows of `shard`: a contiguous run of whole batches, the shards' sizes differing by
    at most one batch, in order, so that the merge is a concatenation."""
    batches = math.ceil(images / batch_size)
    if shard.count > batches:
        raise ShardError(f"{images} images make {batches} batch{'es' * (batches != 1)} of "
                         f"{batch_size}, too few for {shard.count} shards: use at most "
                         f"{batches} shards or a smaller --batch-size.")
    first = batches * shard.index // shard.count
    last = batches * (shard.index + 1) // shard.count
    return range(first * batch_size, min(last * batch_size, images))


def shard_files(folder: Path, key: str, shard: Shard) -> tuple[Path, Path]:
    """The shard's rows (.npy) and its description (.json)."""
    stem = f"{key}.shard-{shard.index}-of-{shard.count}"
    return Path(folder) / f"{stem}.npy", Path(folder) / f"{stem}.json"


@dataclass
class ShardResult:
    shard: Shard
    key: str
    rows: range
    path: Path  # the shard's .npy (not written when `cached`)
    seconds: float
    images_per_second: float | None  # None when nothing was computed
    cached: bool  # the merged features were cached already: nothing to do

    def summary(self) -> dict:
        return {"shard": str(self.shard), "key": self.key, "rows": [self.rows.start,
                self.rows.stop], "images": len(self.rows), "path": str(self.path),
                "seconds": round(self.seconds, 3), "cached": self.cached,
                "images_per_second": (round(self.images_per_second, 2)
                                      if self.images_per_second else None)}


def _split_files(manifest, split: str):
    paths, labels = manifest.files(split)
    if not paths:
        raise DatasetError(f"The {split} split of {manifest.path or 'this manifest'} is empty.")
    return paths, labels


def _sharded_spec(spec):
    spec = spec.resolved()
    if spec.views:  # each view is one seeded pass over every image: a slice draws others
        raise ShardError("A view bank (augmented views) cannot be extracted in shards: its "
                         "random draws run over the whole split. Extract it in one process.")
    return spec


def extract_shard(cache, manifest, split: str, spec, shard: Shard, batch_size: int = 32,
                  folder=None, progress=None, should_stop=None) -> ShardResult:
    """Compute shard `shard` of a split's features into `folder` (default: the cache's own),
    replacing a shard left by an earlier attempt; nothing when the merged set is cached."""
    paths, labels = _split_files(manifest, split)
    spec = _sharded_spec(spec)
    key = cache.key(paths, labels, spec)
    rows = shard_rows(len(paths), batch_size, shard)
    folder = Path(folder or cache.root)
    npy, meta = shard_files(folder, key, shard)
    if cache.has(manifest, split, spec):
        return ShardResult(shard, key, rows, npy, 0.0, None, True)
    with writing_cache(npy):
        folder.mkdir(parents=True, exist_ok=True)
    _remove_own_leftovers(npy)
    model = build_extractor(spec)
    shape = (len(rows), *model.output.shape[1:])
    check_disk(folder, shape, spec.storage)
    meta.unlink(missing_ok=True)  # unfinished from here until the new .json is written
    partial = npy.with_name(_partial_name(npy, os.getpid()))
    try:
        with NpyWriter(partial, shape, spec.storage) as out:
            speed = run_extractor(model, paths[rows.start:rows.stop], spec.image_size,
                                  batch_size, out, progress, should_stop)
        with writing_cache(partial):
            os.replace(partial, npy)
            write_json_atomic(meta, {
                "key": key, "spec": spec.cache_identity(), "split": split,
                "shard": shard.index, "shards": shard.count, "rows": [rows.start, rows.stop],
                "images": len(paths), "batch_size": batch_size, "storage": spec.storage,
                "feature_shape": list(shape[1:]), "host": socket.gethostname(),
                "created": time.time(), "seconds": speed.seconds,
                "first_batch_images": speed.first_batch_images,
                "first_batch_seconds": speed.first_batch_seconds})
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ShardResult(shard, key, rows, npy, speed.seconds, speed.images_per_second, False)


def _partial_name(npy: Path, pid) -> str:
    """A shard being written: hidden, and named by its host and process, because a shared
    folder sees the writers of several machines, and a pid says whether a writer is alive
    only on its own machine."""
    return f".{npy.name}.{socket.gethostname()}.pid{pid}.tmp"


def _remove_own_leftovers(npy: Path) -> None:
    """Remove what this shard's killed writers on this machine left behind (never the files
    of a writer alive, nor of another machine's)."""
    for leftover in npy.parent.glob(_partial_name(npy, "*")):
        if not process_alive(temp_writer(leftover.name)):
            leftover.unlink(missing_ok=True)


def merge_shards(cache, manifest, split: str, spec, folder=None):
    """The split's features (a FeatureSet) written into the cache, atomically, from every
    shard in `folder`; ShardError, and no cache entry, when a shard is missing or does not
    fit. A cache hit when they are cached already. Shards in the cache's own folder are
    removed once merged (the merged set holds their rows); shards in another folder are kept,
    for the other machines to merge."""
    paths, labels = _split_files(manifest, split)
    spec = _sharded_spec(spec)
    key = cache.key(paths, labels, spec)
    cached = cache.load(key, paths)
    if cached is not None:
        return cached
    folder = Path(folder or cache.root)
    shards = _checked_shards(folder, key, spec, len(paths))
    shape = (len(paths), *shards[0][1]["feature_shape"])
    infos = [info for _, info in shards]

    def compute(out):
        for npy, _ in shards:
            reader = RowReader(np.load(npy, mmap_mode="r"))
            for start in range(0, len(reader), MERGE_ROWS):
                out.append(reader.range(start, start + MERGE_ROWS))
        # The extraction's own speed, summed over the shards: images per process-second.
        return ExtractionSpeed(len(paths), *(sum(float(i.get(name) or 0) for i in infos)
                                             for name in ("seconds", "first_batch_images",
                                                          "first_batch_seconds")))

    merged = cache._compute(key, paths, labels, spec, shape, compute, None)
    if folder.resolve() == cache.root.resolve():
        for npy, meta in (shard_files(folder, key, Shard(i["shard"], i["shards"]))
                          for i in infos):
            meta.unlink(missing_ok=True)
            npy.unlink(missing_ok=True)
    return merged


def _checked_shards(folder: Path, key: str, spec, images: int) -> list[tuple[Path, dict]]:
    """Every shard of `key` in `folder`, in order, each checked against the split: its key,
    its place in the same plan (shard count, batch size) and its rows."""
    count = _shard_count(folder, key, spec)
    shards = []
    for index in range(count):
        shard = Shard(index, count)
        npy, meta = shard_files(folder, key, shard)
        again = f"run extract --shard {shard} with the same settings, then merge again"
        try:
            info = read_json_object(meta)
        except DamagedFile as exc:
            raise ShardError(f"Shard {shard}'s {exc}: {again}.") from None
        if info is None or not npy.exists():
            raise ShardError(f"Shard {shard} of these {images} images (key {key}) is missing "
                             f"from {folder}{_other_sets(folder, key, spec, shard)}: {again}.")
        _check_identity(info, key, spec, shard, again)
        shards.append((npy, info))
    batch = shards[0][1].get("batch_size")
    for npy, info in shards:
        _check_rows(npy, info, images, batch, spec.storage)
    return shards


def _shard_count(folder: Path, key: str, spec) -> int:
    """N, from the shards of `key` found; ShardError when none is, or shards of several N."""
    counts = {int(p.name.rsplit("-of-", 1)[1].split(".")[0])
              for p in folder.glob(f"{key}.shard-*-of-*.json")}
    if len(counts) == 1:
        return counts.pop()
    if counts:
        ways = " and ".join(str(n) for n in sorted(counts))
        raise ShardError(f"{folder} holds shards of these features cut {ways} ways: remove the "
                         f"files {key}.shard-*-of-N.* of the count you no longer want, then "
                         "merge.")
    raise ShardError(f"No shard of these features (key {key}) in {folder}"
                     f"{_other_sets(folder, key, spec)}: run extract --shard I/N for every I "
                     "with the same settings, then merge.")


def _other_sets(folder: Path, key: str, spec, shard: Shard | None = None) -> str:
    """What a missing shard's message adds when shards of other features are in the folder:
    the usual reason one is missing is that it was made with other settings, which it names
    when that very shard (I/N) of other features is there."""
    others = [p for p in folder.glob("*.shard-*-of-*.json") if not p.name.startswith(key)]
    if shard is not None:
        twin = f".shard-{shard.index}-of-{shard.count}.json"
        for path in (p for p in others if p.name.endswith(twin)):
            try:
                theirs = (read_json_object(path) or {}).get("spec") or {}
            except DamagedFile:
                continue
            why = _differences(theirs, spec.cache_identity(), "")
            return (f"; a shard {shard} of other features is there, made "
                    + (f"with {why}" if why else "before the photos or labels changed"))
    sets = {p.name.split(".shard-")[0] for p in others}
    if not sets:
        return ""
    return (f"; shards of {len(sets)} other feature set{'s' * (len(sets) != 1)} are there, "
            "made with other settings or before the photos changed")


def _differences(theirs: dict, ours: dict,
                 none: str = "other photos, labels or shard place") -> str:
    """The settings in which two cache identities differ, as "seed 2, not 1"."""
    changed = [f"{name} {theirs.get(name)!r}, not {ours.get(name)!r}"
               for name in sorted(set(theirs) | set(ours)) if theirs.get(name) != ours.get(name)]
    return ", ".join(changed) if changed else none


def _check_identity(info: dict, key: str, spec, shard: Shard, again: str) -> None:
    if info.get("key") == key and (info.get("shard"), info.get("shards")) == (shard.index,
                                                                              shard.count):
        return
    why = _differences(info.get("spec") or {}, spec.cache_identity())
    raise ShardError(f"Shard {shard} was made for other features (key {info.get('key')}, not "
                     f"{key}: {why}): {again}.")


def _check_rows(npy: Path, info: dict, images: int, batch: int, storage: str) -> None:
    shard = Shard(info["shard"], info["shards"])
    again = f"extract it again (--shard {shard}"
    if info.get("batch_size") != batch:
        raise ShardError(f"Shard {shard} was made with --batch-size {info.get('batch_size')}, "
                         f"shard 0/{shard.count} with {batch}: the shards must cut the split at "
                         f"the same batches; {again} --batch-size {batch}), then merge.")
    rows = shard_rows(images, batch, shard)
    try:
        stored = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ShardError(f"Shard {shard}'s {npy.name} is damaged ({exc}): {again}), then "
                         "merge.") from None
    if (info.get("rows") != [rows.start, rows.stop] or len(stored) != len(rows)
            or list(stored.shape[1:]) != info.get("feature_shape") or stored.dtype != storage):
        raise ShardError(f"Shard {shard} holds {len(stored)} rows of {stored.dtype} "
                         f"{tuple(stored.shape[1:])}, but its slice is rows {rows.start} to "
                         f"{rows.stop - 1} ({len(rows)} rows of {storage}): {again}), then "
                         "merge.")
