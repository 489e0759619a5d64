"""`python -m transfer_core`: JSON a script can read, one error line for a user's mistake, and
help that answers without loading TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transfer_core.cli import COMMANDS, build_parser, main
from transfer_core.datasets import load_manifest

PROJECT = Path(__file__).resolve().parents[1]


def _run_json(capsys, *argv) -> dict:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def _python(*args, cwd=PROJECT) -> subprocess.CompletedProcess:
    """This interpreter in a fresh process, with the project importable from any folder."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_scan_json_counts_each_class_and_says_why_files_were_skipped(folder_dataset, capsys):
    (folder_dataset / "red" / "notes.jpg").write_text("not a photo")
    (folder_dataset / "blue" / "empty.png").write_bytes(b"")
    report = _run_json(capsys, "scan", str(folder_dataset))
    assert report["usable"] == {"blue": 12, "green": 12, "red": 12}
    assert report["skipped_per_class"] == {"blue": 1, "green": 0, "red": 1}
    reasons = {Path(item["path"]).name: item["reason"] for item in report["skipped"]}
    assert "not an image" in reasons["notes.jpg"]
    assert "zero bytes" in reasons["empty.png"]


def test_split_writes_a_manifest_and_lays_the_split_out(folder_dataset, workspace, tmp_path,
                                                        capsys):
    layout = tmp_path / "small"
    result = _run_json(capsys, "split", str(folder_dataset), "--counts", "6,3,3",
                       "--layout", str(layout))
    assert result["counts"]["train"] == {"blue": 6, "green": 6, "red": 6}
    assert result["counts"]["test"] == {"blue": 3, "green": 3, "red": 3}
    manifest = load_manifest(result["manifest"])
    assert Path(result["manifest"]).parent == workspace / "manifests"
    assert manifest.counts() == result["counts"]
    for name in ("blue", "green", "red"):
        links = sorted((layout / "train" / name).iterdir())
        assert len(links) == 6 and all(link.is_symlink() for link in links)
        wanted = sorted(Path(p).name for p, label, s in manifest.rows
                        if s == "train" and label == name)
        assert [link.name for link in links] == wanted
        assert all(link.resolve().parent == folder_dataset / name for link in links)
    assert sorted(p.name for p in layout.iterdir()) == ["test", "train", "validation"]


def test_extract_twice_is_a_miss_then_a_hit(folder_dataset, workspace, capsys):
    manifest = _run_json(capsys, "split", str(folder_dataset), "--counts", "2,0,1")["manifest"]
    argv = ["extract", "--data", manifest, "--split", "test", "--backbone", "vgg16",
            "--weights", "none", "--image-size", "32"]
    first = _run_json(capsys, *argv)
    second = _run_json(capsys, *argv)
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert first["key"] == second["key"] and first["images"] == second["images"] == 3
    assert first["feature_shape"] == [1, 1, 512]
    assert first["images_per_second"] > 0 and second["images_per_second"] is None


def test_every_command_has_help(capsys):
    build_parser()  # registers the commands
    assert {"scan", "split", "extract"} <= set(COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: python -m transfer_core " + name) and "--json" in out
    assert main([]) == 1 and "scan" in capsys.readouterr().out  # no command: the overview


def test_help_does_not_load_tensorflow():
    result = _python(
        "-c",
        "import contextlib, io, sys\n"
        "from transfer_core.cli import COMMANDS, build_parser, main\n"
        "build_parser()\n"
        "for name in COMMANDS:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main([name, '--help'])\n"
        "        except SystemExit as done:\n"
        "            assert done.code == 0, name\n"
        "print(sorted(COMMANDS))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n")
    assert result.returncode == 0, result.stderr
    commands, heavy = result.stdout.splitlines()[-2:]
    assert "extract" in commands
    assert heavy == "[]"


def test_the_commands_do_not_import_the_entry_point():
    """cli → commands → cli_shared, one way: a command module never imports cli back."""
    result = _python("-c", "import sys, transfer_core.commands\n"
                           "print('transfer_core.cli' in sys.modules)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"


def test_a_user_error_is_one_line_and_exit_status_1(tmp_path):
    result = _python("-m", "transfer_core", "scan", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""



def test_train_uses_the_view_bank_unless_told_otherwise(tmp_path):
    """The CLI's default is TrainConfig's ("auto"); a number fixes K; 0 is the chapter's way."""
    from transfer_core.commands import _train_config

    parser = build_parser()
    args = parser.parse_args(["train", "--data", str(tmp_path / "m.json")])
    assert _train_config(args).view_bank == "auto"
    for given, expected in (("0", 0), ("7", 7), ("auto", "auto")):
        args = parser.parse_args(["train", "--data", str(tmp_path / "m.json"),
                                  "--view-bank", given])
        assert _train_config(args).view_bank == expected
    with pytest.raises(SystemExit):  # argparse's one-line error
        parser.parse_args(["train", "--data", str(tmp_path / "m.json"), "--view-bank", "lots"])
    # fine-tuning runs on the fly after a head phase on the bank unless told otherwise
    assert _train_config(args).fine_tune_on_bank is False
    args = parser.parse_args(["train", "--data", str(tmp_path / "m.json"), "--fine-tune-on-bank"])
    assert _train_config(args).fine_tune_on_bank is True


def test_cache_shows_its_size_and_clear_frees_it_unless_a_run_trains(tmp_path, capsys):
    from transfer_core.features import FeatureCache
    from transfer_core.runs import Run, TrainConfig

    workspace = tmp_path / "workspace"
    feature_set = FeatureCache(workspace).root / "0123abcd"
    feature_set.mkdir()
    (feature_set / "features.npy").write_bytes(b"\0" * 3 * 2**20)
    assert _run_json(capsys, "cache", "--workspace", str(workspace))["bytes"] == 3 * 2**20

    config = TrainConfig(manifest="m.json", classes=["a", "b"], weights="none")
    run = Run.create(workspace, config, "busy")
    run.update_status(state="running", pid=os.getpid())  # alive: this process
    assert main(["cache", "--clear", "--workspace", str(workspace)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: busy is training") and error.count("\n") == 1
    assert (feature_set / "features.npy").exists()

    run.update_status(state="finished", pid=None)
    assert main(["cache", "--clear", "--workspace", str(workspace)]) == 0
    assert capsys.readouterr().out == "feature cache cleared: 3.0 MiB freed\n"
    assert not feature_set.exists() and FeatureCache(workspace).size_bytes() == 0
