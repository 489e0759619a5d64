"""Sharded extraction: shards merged in order give the very file one process writes, under the
same key; a missing or mismatched shard is a one-line error that leaves no cache entry; and
training then reads the merged set as a cache hit. VGG16 at 32 px, random weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import transfer_core.features as features_module
from transfer_core.cli import main
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.features import FeatureCache, FeatureSpec
from transfer_core.runs import Run, TrainConfig
from transfer_core.shards import (Shard, ShardError, _partial_name, extract_shard, merge_shards,
                                  parse_shard, shard_files, shard_rows)
from transfer_core.training import feature_spec, train

SPEC = FeatureSpec("vgg16", "none", 32, seed=1)
BATCH = 2  # 9 training images: 5 batches, cut 3+2 in two shards and 1+2+2 in three


@pytest.fixture
def manifest(folder_dataset, workspace):
    """Per class: 3 train, 1 validation, 1 test (9 training images)."""
    return split(scan(folder_dataset, workers=1), SplitRequest(counts=(3, 1, 1), seed=0))


@pytest.fixture
def cache(workspace) -> FeatureCache:
    return FeatureCache(workspace)


def _shard(cache, manifest, shard: str, spec=SPEC, folder=None, batch=BATCH, name="train"):
    return extract_shard(cache, manifest, name, spec, parse_shard(shard), batch, folder)


def _reference(tmp_path, manifest, spec=SPEC, name="train"):
    """The same split extracted by one process, in a workspace of its own."""
    return FeatureCache(tmp_path / "one-process").extract(manifest, name, spec, BATCH)


def _finished_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _no_cache_entry(cache) -> bool:
    return not [p for p in cache.root.iterdir() if p.is_dir()]


def test_shards_cut_whole_batches_in_order_with_sizes_one_batch_apart():
    assert [shard_rows(9, 2, Shard(i, 2)) for i in range(2)] == [range(0, 4), range(4, 9)]
    assert [shard_rows(9, 2, Shard(i, 3)) for i in range(3)] == [range(0, 2), range(2, 6),
                                                                 range(6, 9)]
    with pytest.raises(ShardError, match="at most 5 shards"):
        shard_rows(9, 2, Shard(0, 6))


@pytest.mark.parametrize("count", [2, 3])
def test_merged_shards_are_byte_identical_to_one_process(cache, manifest, tmp_path, count):
    one = _reference(tmp_path, manifest)
    results = [_shard(cache, manifest, f"{i}/{count}") for i in reversed(range(count))]
    assert sorted(len(r.rows) for r in results) != [len(results[0].rows)] * count  # uneven
    assert _no_cache_entry(cache) and not cache.has(manifest, "train", SPEC)

    merged = merge_shards(cache, manifest, "train", SPEC)
    assert merged.key == one.key and not merged.hit
    assert ((merged.folder / "features.npy").read_bytes()
            == (one.folder / "features.npy").read_bytes())
    assert (merged.folder / "labels.npy").read_bytes() == (one.folder / "labels.npy").read_bytes()
    assert not list(cache.root.glob("*.shard-*")), "shards in the cache are removed once merged"
    assert merge_shards(cache, manifest, "train", SPEC).hit  # merging again: nothing to do
    assert _shard(cache, manifest, f"0/{count}").cached  # and no shard is computed again


def test_a_missing_shard_is_named_and_leaves_no_cache_entry(cache, manifest):
    _shard(cache, manifest, "0/3")
    _shard(cache, manifest, "2/3")
    with pytest.raises(ShardError, match=r"Shard 1/3 .* is missing .*--shard 1/3") as error:
        merge_shards(cache, manifest, "train", SPEC)
    assert "\n" not in str(error.value)
    assert _no_cache_entry(cache) and not cache.has(manifest, "train", SPEC)
    with pytest.raises(ShardError, match="No shard of these features"):
        merge_shards(cache, manifest, "validation", SPEC)


def test_a_shard_made_with_other_settings_is_refused(cache, manifest):
    other = FeatureSpec("vgg16", "none", 32, seed=2)
    _shard(cache, manifest, "0/2")
    made = _shard(cache, manifest, "1/2", spec=other)
    assert made.key != _shard(cache, manifest, "0/2").key
    with pytest.raises(ShardError, match=r"Shard 1/2 .* is missing .*a shard 1/2 of other "
                                         r"features is there, made with seed 2, not 1"):
        merge_shards(cache, manifest, "train", SPEC)
    with pytest.raises(ShardError, match="No shard .*shards of 2 other feature sets are there"):
        merge_shards(cache, manifest, "train", FeatureSpec("vgg16", "none", 32, seed=3))

    # The other set's shard under this key's name (copied or renamed): its record says so.
    key = _shard(cache, manifest, "0/2").key
    for source, target in zip(shard_files(cache.root, made.key, Shard(1, 2)),
                              shard_files(cache.root, key, Shard(1, 2))):
        shutil.copy(source, target)
    with pytest.raises(ShardError, match=r"Shard 1/2 was made for other features .*seed 2, "
                                         r"not 1.*--shard 1/2"):
        merge_shards(cache, manifest, "train", SPEC)
    assert _no_cache_entry(cache)


def test_a_shard_with_wrong_rows_is_refused_and_running_it_again_fixes_it(cache, manifest,
                                                                            tmp_path):
    _shard(cache, manifest, "0/2")
    second = _shard(cache, manifest, "1/2")
    np.save(second.path, np.load(second.path)[:3])  # 3 rows where its slice has 5
    with pytest.raises(ShardError, match=r"Shard 1/2 holds 3 rows .*rows 4 to 8 \(5 rows"):
        merge_shards(cache, manifest, "train", SPEC)
    assert _no_cache_entry(cache)

    _shard(cache, manifest, "1/2", batch=3)  # the same shard cut at other batches
    with pytest.raises(ShardError, match="--batch-size 3, shard 0/2 with 2"):
        merge_shards(cache, manifest, "train", SPEC)

    # Running the shard again replaces it, and removes what its killed writers on this
    # machine left, never the file of a writer still alive.
    dead = _finished_pid()
    dead_left = second.path.with_name(_partial_name(second.path, dead))
    live_left = second.path.with_name(_partial_name(second.path, os.getppid()))
    dead_left.write_bytes(b"half a shard")
    live_left.write_bytes(b"a shard being written")
    _shard(cache, manifest, "1/2")
    assert not dead_left.exists() and live_left.exists()
    live_left.unlink()
    merged = merge_shards(cache, manifest, "train", SPEC)
    np.testing.assert_array_equal(merged.features, _reference(tmp_path, manifest).features)


def test_cli_shards_from_tf_config_into_a_shared_folder_then_merges(manifest, workspace,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    path = manifest.save(workspace, "colours")
    shared = tmp_path / "shared"
    argv = ["extract", "--data", str(path), "--backbone", "vgg16", "--weights", "none",
            "--image-size", "32", "--seed", "1", "--precision", "float32",
            "--batch-size", str(BATCH), "--json"]

    def run(*more, env=None):
        monkeypatch.delenv("TF_CONFIG", raising=False)
        if env:
            monkeypatch.setenv("TF_CONFIG", json.dumps(env))
        code = main([*argv, *more])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 else err)

    cluster = {"worker": ["host1:12345", "host2:12345"]}
    for index in (1, 0):  # each worker: its shard from TF_CONFIG, onto the shared folder
        code, shard = run("--shard", "--shard-folder", str(shared),
                          env={"cluster": cluster, "task": {"type": "worker", "index": index}})
        assert code == 0 and shard["shard"] == f"{index}/2" and not shard["cached"]
    code, merged = run("--merge", "--shard-folder", str(shared))
    assert code == 0 and merged["images"] == 9
    assert len(list(shared.glob("*.shard-*"))) == 4, "a shared folder keeps its shards"
    code, whole = run("--workspace", str(tmp_path / "one-process"))
    assert code == 0 and whole["key"] == merged["key"]
    np.testing.assert_array_equal(np.load(f"{merged['folder']}/features.npy"),
                                  np.load(f"{whole['folder']}/features.npy"))

    code, error = run("--shard", "0/2", "--merge")
    assert code == 1 and error.count("\n") == 1 and "two steps" in error
    code, error = run("--shard", "auto")
    assert code == 1 and error.count("\n") == 1 and "TF_CONFIG, which is not set" in error
    code, error = run("--merge", "--split", "test", "--shard-folder", str(shared))
    assert code == 1 and error.count("\n") == 1 and "No shard of these features" in error


def test_training_reads_the_merged_shards_without_extracting(manifest, workspace, cache,
                                                             monkeypatch):
    path = manifest.save(workspace, "colours")
    config = TrainConfig(manifest=str(path), strategy="feature_extraction", backbone="vgg16",
                         weights="none", image_size=32, epochs=1, batch_size=4, view_bank=0,
                         precision="float32", distribute="none")
    spec = feature_spec(config)
    for name in ("train", "validation"):
        for index in range(2 if name == "train" else 1):
            _shard(cache, manifest, f"{index}/{2 if name == 'train' else 1}", spec, name=name)
        merge_shards(cache, manifest, name, spec)

    def no_model(spec):
        raise AssertionError("training must read the merged shards, not extract again")

    monkeypatch.setattr(features_module, "build_extractor", no_model)
    status = train(Run.create(workspace, config, "from-shards"), workspace)
    assert status["state"] == "finished", status.get("error")
