"""The benchmark script keeps working: a tiny extract + cache run through its command line, on
generated photos (VGG16 at 32 px, random weights). The real benchmark is run by hand, see
docs/BENCHMARKS.md; this only keeps bench/run.py from rotting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.run import parse_args
from conftest import make_kaggle_dataset

PROJECT = Path(__file__).resolve().parents[1]


def test_extract_and_cache_sections_print_a_table_and_write_json(tmp_path):
    data = make_kaggle_dataset(tmp_path / "photos", per_class=10)
    out = tmp_path / "benchmarks"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--data", str(data), "--sections", "extract,cache",
         "--backbones", "vgg16:32", "--images", "20", "--pairs", "1",
         "--cache-backbone", "vgg16:32", "--cache-images", "20", "--keras-home", "",
         "--json-out", str(out)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "latest.json").read_text())
    assert len(list(out.glob("*.json"))) == 2  # the timestamped file and latest.json
    assert list(report["sections"]) == ["extract", "cache"] and report["complete"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["tensorflow"]
    extract = report["sections"]["extract"]["backbones"]["vgg16@32"]
    assert len(extract["pairs"]) == 1
    assert min(extract["ours"], extract["chapter"], extract["bare"], extract["ours_steady"]) > 0
    assert extract["of_bare"] == pytest.approx(extract["ours_steady"] / extract["bare"])
    assert extract["ratio"] == pytest.approx(extract["ours"] / extract["chapter"])
    assert report["sections"]["extract"]["matmul_before"]["best_gflops"] > 0
    cache = report["sections"]["cache"]
    assert cache["images"] == 20 and cache["hit_median"] < cache["miss_seconds"]
    table = done.stdout
    assert "vgg16@32, 20 images: images/s" in table and "hit (median of 5)" in table


@pytest.mark.parametrize("argv, flag", [
    (["--images", "30"], "--images"),
    (["--sections", "extract,speed"], "--sections"),
    (["--counts", "2000,1000"], "--counts"),
    (["--backbones", "resnet50_v2"], "vgg16 and mobilenet_v2"),
])
def test_bad_flags_are_refused_with_a_message_that_names_them(argv, flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert flag in capsys.readouterr().err


def test_view_bank_benchmark_splits_each_run_into_phases(tmp_path):
    """bench/view_bank.py on a tiny split: both paths run, their phases add up to the wall
    time, the bank path spends time on the bank and the reference does not."""
    data = make_kaggle_dataset(tmp_path / "photos", per_class=8)
    out = tmp_path / "view_bank.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "bench/view_bank.py", "--data", str(data), "--backbone", "vgg16",
         "--weights", "none", "--image-size", "32", "--counts", "4,2,2", "--epochs", "2",
         "--views", "2", "--extrapolate", "8,4,4:4", "--work", str(tmp_path),
         "--json-out", str(out)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    reference, bank = report["runs"]
    assert (reference["views"], bank["views"]) == (0, 2)
    for run in (reference, bank):
        assert run["state"] == "finished" and 0 <= run["test_accuracy"] <= 1
        assert sum(run["phases"].values()) == pytest.approx(run["wall_seconds"], abs=0.5)
        assert [e["phase"] for e in run["epochs"]] == ["head", "head"]
        assert run["extrapolated_seconds"] > run["phases"]["other"]
    assert reference["phases"]["bank"] == 0 and reference["cache_bytes"] == 0
    assert bank["phases"]["bank"] > 0 and bank["cache_bytes"] > 0
    assert "| 1 | view bank K=2 |" in done.stdout and "at 8,4,4:4" in done.stdout


def test_scale_benchmark_photos_of_each_generator_and_their_close_pairs(tmp_path):
    """bench/scale.py's scan and split on 200 photos of each generator, each in its own
    folders: the look-alikes' hashes cluster (the scan checks close pairs), the varied photos'
    do not, so their only close pairs are the copies planted among them, which the scan
    reports as duplicates, each kind, in one folder or in one sub-folder per class; both keep
    the classes' tints apart."""
    rows = {}
    for kind, copies, layout in (("lookalike", "0", "kaggle"), ("varied", "0.05", "kaggle"),
                                 ("varied", "0.05", "class-folders")):
        done = subprocess.run(
            [sys.executable, "-m", "bench.scale", "--root", str(tmp_path), "--sizes", "200",
             "--stages", "scan", "split", "--photos", kind, "--copies", copies,
             "--layout", layout], cwd=PROJECT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        rows[kind if layout == "kaggle" else layout] = {row["stage"]: row for row in lines}
    for row in rows.values():
        assert row["scan"]["images"] == 200
        assert sum(row["split"]["counts"].values()) == 200
    assert rows["lookalike"]["scan"]["close_pairs"] > 0
    assert rows["lookalike"]["scan"]["duplicates"] == 0
    scan = rows["varied"]["scan"]
    planted = scan["copies"]["planted"]
    assert min(planted.values()) > 0  # every kind: the exact path and the near one both run
    assert scan["copies"]["found"] == planted and scan["copies"]["other_pairs"] == 0
    assert scan["duplicates"] == scan["close_pairs"] == sum(planted.values())
    assert rows["class-folders"]["scan"]["copies"] == scan["copies"]  # the same photos
    classes = tmp_path / "photos-varied-copies5-classes-200"
    assert [len(list((classes / name).glob("*.jpg"))) for name in ("cat", "dog")] == [100, 100]
    assert len(list((tmp_path / "pool").glob("*.jpg"))) == 200
    assert len(list((tmp_path / "pool-varied-copies5").glob("*.jpg"))) == sum(planted.values())
    folder = tmp_path / "photos-varied-copies5-200"
    cat, dog = (np.asarray(Image.open(folder / f"{name}.7.jpg"), dtype=float).mean(axis=(0, 1))
                for name in ("cat", "dog"))
    assert cat[0] > cat[2] + 60 and dog[2] > dog[0] + 60  # red over blue, and the reverse
