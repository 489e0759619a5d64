"""Faults in run folders and the feature cache, as a user meets them: a damaged file marks its
run "damaged" and nothing else (CLI, sidebar, every page); a full disk ends a run "failed" with
the free space named and no temporary file left; a run whose process vanished is
"interrupted" and its kept model stays usable; leftovers of dead writers go at the next start.

ENOSPC is simulated by patching the writer; the run is VGG16 at 32 px with random weights.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from conftest import make_folder_dataset
from test_app import assert_no_exception, open_page, scan_for_components_once, texts, use_workspace
from test_training import FAST
from transfer_core import jobs, storage
from transfer_core.cli import main
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.errors import RunError
from transfer_core.features import FeatureCache, NpyWriter
from transfer_core.runs import Run, TrainConfig, list_runs, summary_line
from transfer_core.training import train



def full_disk(*args, **kwargs):
    """A writer on a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device")


PAGES = ("dataset", "train", "curves", "evaluate", "predict")


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if storage.is_temp(p.name, p.is_dir()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One finished run (3 epochs) and its manifest: the source every test copies."""
    root = tmp_path_factory.mktemp("faults")
    workspace = root / "workspace"
    colours = make_folder_dataset(root / "colours", per_class=6)
    manifest = split(scan(colours, workers=1), SplitRequest(counts=(3, 2, 1))).save(
        workspace, "colours")
    run = Run.create(workspace, TrainConfig(manifest=str(manifest), epochs=3, **FAST), "good")
    status = train(run, workspace)
    assert status["state"] == "finished", status
    return {"workspace": workspace, "manifest": manifest, "run": run}


@pytest.fixture
def workspace(trained, tmp_path, monkeypatch) -> Path:
    """A fresh workspace holding a copy of the trained run and its manifest."""
    path = tmp_path / "workspace"
    shutil.copytree(trained["workspace"], path)
    monkeypatch.setenv("TRANSFER_LAB_WORKSPACE", str(path))
    return path


def copy_run(workspace: Path, name: str) -> Run:
    """A copy of the good run under another name."""
    folder = workspace / "runs" / name
    shutil.copytree(workspace / "runs" / "good", folder)
    return Run(folder)


def newest_last(workspace: Path, *names: str) -> None:
    """Runs are listed newest first, by config.json's time: make `names` the newest, in order."""
    for offset, name in enumerate(names, 1):
        stamp = time.time() + offset
        os.utime(workspace / "runs" / name / "config.json", (stamp, stamp))


def set_json(run: Run, name: str, edit) -> None:
    path = run.folder / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


# --- damaged files: that run is "damaged", the others are not ------------------------------

DAMAGED_CONFIGS = {
    "truncated": ('{"manifest": "m.json", "backb', "config.json: not valid JSON"),
    "unknown backbone": ({"backbone": "resnet9"}, "config.json: Unknown backbone 'resnet9'"),
    "invalid value": ({"epochs": 0}, "config.json: epochs must be at least 1 (got 0)"),
    "wrong type": ({"epochs": "30"}, "config.json: epochs must be int (got '30')"),
    "not an object": ("42", "config.json: holds a number, not a JSON object"),
}


@pytest.mark.parametrize("case", DAMAGED_CONFIGS)
def test_a_damaged_config_marks_only_its_run_damaged(workspace, case):
    bad = copy_run(workspace, "bad")
    damage, words = DAMAGED_CONFIGS[case]
    if isinstance(damage, dict):
        set_json(bad, "config.json", lambda config: {**config, **damage})
    else:
        (bad.folder / "config.json").write_text(damage)

    runs = {run.name: run for run in list_runs(workspace)}
    assert set(runs) == {"good", "bad"}
    summary = runs["bad"].summary()
    assert summary["state"] == "damaged" and summary["error"].startswith("damaged: ")
    assert words in summary["error"]
    assert runs["bad"].status() == {"state": "damaged", "error": summary["error"]}
    assert not runs["bad"].has_usable_model()
    with pytest.raises(RunError, match="Run bad is damaged: config.json"):
        _ = runs["bad"].config  # reading the property raises
    assert runs["good"].summary()["state"] == "finished"
    assert runs["good"].has_usable_model()


@pytest.mark.parametrize("content, words", [
    ('{"state": "fin', "status.json: not valid JSON"),
    ("[]", "status.json: holds a list, not a JSON object"),
    ('{"state": "exploded"}', "status.json: unknown state 'exploded'"),
    ('{"state": "running", "pid": "abc"}', "status.json: pid is 'abc'"),
])
def test_a_damaged_status_marks_only_its_run_damaged(workspace, content, words):
    bad = copy_run(workspace, "bad")
    (bad.folder / "status.json").write_text(content)

    summary = bad.summary()
    assert summary["state"] == "damaged" and words in summary["error"]
    assert not bad.has_usable_model() and bad.kept_epoch() is None
    assert Run(workspace / "runs" / "good").status()["state"] == "finished"
    assert jobs.active_run(workspace) is None  # nor does it stop `runs` or the queue
    assert jobs.queue_position(bad, workspace) is None


def test_a_line_that_is_not_an_object_in_metrics_is_skipped_and_counted(workspace):
    run = Run(workspace / "runs" / "good")
    epochs = run.epochs()
    lines = (run.folder / "metrics.jsonl").read_text().splitlines()
    damaged = ["42", '"text"', "[1, 2]", '{"type": "epoch", "global_epoch": "x"}', "{broken"]
    (run.folder / "metrics.jsonl").write_text("\n".join(damaged[:3] + lines + damaged[3:]) + "\n")

    assert run.epochs() == epochs  # every good line is still read
    assert run.skipped_metric_lines() == 5
    summary = run.summary()
    assert summary["state"] == "finished" and summary["metric_lines_skipped"] == 5
    assert summary["warnings"] == ["damaged: metrics.jsonl: 5 lines skipped (not a JSON object, "
                                   "or an epoch line without its numbers)"]
    assert "metrics.jsonl: 5 lines skipped" in summary_line(summary)
    assert run.has_usable_model()


def test_a_line_still_being_written_is_not_counted(workspace):
    run = Run(workspace / "runs" / "good")
    with open(run.folder / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "progress", "ba')  # no newline yet: the writer is mid-line
    assert run.skipped_metric_lines() == 0 and run.warnings() == []


@pytest.mark.parametrize("name, content, words", [
    ("audit.json", '{"strategy": "feature', "damaged: audit.json: not valid JSON"),
    ("evaluation.json", '{"accuracy": 0.5}', "damaged: evaluation.json: unknown format"),
])
def test_a_damaged_audit_or_evaluation_is_a_warning_not_an_unusable_run(workspace, name, content,
                                                                        words):
    run = Run(workspace / "runs" / "good")
    (run.folder / name).write_text(content)
    read = run.audit if name == "audit.json" else run.evaluation
    assert read() is None  # as if there were none: evaluating again writes a new one
    [warning] = run.summary()["warnings"]
    assert warning.startswith(words)
    assert run.summary()["state"] == "finished" and run.has_usable_model()


def test_cli_runs_lists_damaged_runs_in_one_line_each(workspace, capsys):
    (copy_run(workspace, "bad-status").folder / "status.json").write_text('{"state": "fin')
    (copy_run(workspace, "bad-config").folder / "config.json").write_text('{"manifest": "m.js')
    set_json(copy_run(workspace, "resnet9"), "config.json",
             lambda config: {**config, "backbone": "resnet9"})
    with open(copy_run(workspace, "forty-two").folder / "metrics.jsonl", "a") as handle:
        handle.write("42\n")

    assert main(["runs", "--workspace", str(workspace)]) == 0
    out, err = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert set(lines) == {"good", "bad-status", "bad-config", "resnet9", "forty-two"}
    assert lines["bad-status"].startswith("damaged: status.json: not valid JSON")
    assert lines["bad-config"].startswith("damaged: config.json: not valid JSON")
    assert lines["resnet9"].startswith("damaged: config.json: Unknown backbone 'resnet9'")
    assert lines["forty-two"].startswith("finished, 3/3 epochs")
    assert "damaged: metrics.jsonl: 1 line skipped" in lines["forty-two"]
    assert lines["good"].startswith("finished, 3/3 epochs") and "damaged" not in lines["good"]
    assert "Traceback" not in err

    assert main(["runs", "--workspace", str(workspace), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["runs"]}
    assert rows["resnet9"]["state"] == "damaged"
    assert "Unknown backbone" in rows["resnet9"]["error"]
    assert rows["forty-two"]["metric_lines_skipped"] == 1
    assert rows["good"]["state"] == "finished" and rows["good"]["error"] is None


@pytest.fixture
def app_workspace(workspace, monkeypatch):
    scan_for_components_once(monkeypatch)
    use_workspace(monkeypatch, workspace)
    yield workspace
    use_workspace(monkeypatch, workspace)  # clears the caches the pages filled


@pytest.mark.parametrize("page", PAGES)
def test_every_page_names_damaged_runs_and_offers_only_the_others(app_workspace, page):
    workspace = app_workspace
    with open(copy_run(workspace, "forty-two").folder / "metrics.jsonl", "a") as handle:
        handle.write("42\n")
    set_json(copy_run(workspace, "resnet9"), "config.json",
             lambda config: {**config, "backbone": "resnet9"})
    (copy_run(workspace, "bad-status").folder / "status.json").write_text('{"state": "fin')
    (copy_run(workspace, "bad-config").folder / "config.json").write_text('{"manifest": "m.js')
    newest_last(workspace, "forty-two", "resnet9", "bad-status", "bad-config")

    at = open_page(page, size_vgg16=32)  # the newest run, bad-config, is the current one
    assert_no_exception(at)
    sidebar = " ".join(texts(at.sidebar.caption))
    assert "damaged: config.json: not valid JSON" in sidebar  # the current run
    assert "resnet9 · damaged: config.json: Unknown backbone 'resnet9'" in sidebar
    assert "bad-status · damaged: status.json: not valid JSON" in sidebar
    offered = {"evaluate": "evaluate_run", "predict": "predict_run"}
    if page in offered:
        picker = at.selectbox(key=offered[page])
        assert sorted(option.split(" ")[0] for option in picker.options) == ["forty-two", "good"]
    if page == "curves":
        assert sorted(at.multiselect(key="curve_runs").options) == [
            "forty-two (vgg16, feature extraction) · finished",
            "good (vgg16, feature extraction) · finished"]
        at.multiselect(key="curve_runs").set_value(["forty-two"]).run()
        assert_no_exception(at)
        assert any("damaged: metrics.jsonl: 1 line skipped" in c for c in texts(at.caption))
    if page == "train":
        assert any("This run is damaged: config.json" in e for e in texts(at.main.error))
        assert "Start training" in [b.label for b in at.button]


# --- a full disk -----------------------------------------------------------------------------

def full_disk_on_save(monkeypatch) -> list[Path]:
    """model.save writes part of the file, then the disk is full. Returns the paths tried."""
    tried = []

    def save(model, path, *args, **kwargs):
        tried.append(Path(path))
        Path(path).write_bytes(b"PK" + b"\0" * 4096)
        full_disk()

    monkeypatch.setattr(keras.Model, "save", save)
    return tried


def test_a_full_disk_while_saving_the_model_fails_the_run_in_one_line(workspace, trained,
                                                                      monkeypatch, capsys):
    tried = full_disk_on_save(monkeypatch)
    folder = workspace / "runs" / "full"
    code = main(["train", "--workspace", str(workspace), "--data", str(trained["manifest"]),
                 "--backbone", "vgg16", "--weights", "none", "--image-size", "32",
                 "--epochs", "2", "--batch-size", "4", "--learning-rate", "2e-3",
                 "--run-dir", str(folder)])
    out, err = capsys.readouterr()

    assert code == 1
    assert tried and tried[0].parent == folder and f"pid{os.getpid()}" in tried[0].name
    [line, *_] = out.splitlines()
    assert line.startswith("full: failed — no space left on device (")
    assert f"MB free in {folder}) while saving the model: free some space" in line
    assert "Traceback" not in err and "Traceback" not in out
    assert temp_files(folder) == [] and not (folder / "model.keras").exists()
    status = json.loads((folder / "status.json").read_text())  # written, not left "running"
    assert status["state"] == "failed" and status["pid"] is None
    assert "no space left on device" in status["error"]
    run = Run(folder)
    assert run.epochs(), "the epoch finished before its model could not be saved"
    problem = run.model_problem()
    assert "failed after 1 epoch without saving a model: no space left" in problem
    assert "has not finished an epoch" not in problem


def test_evaluate_says_why_a_failed_run_has_no_model(workspace, trained, monkeypatch, capsys):
    full_disk_on_save(monkeypatch)
    folder = workspace / "runs" / "full"
    main(["train", "--workspace", str(workspace), "--data", str(trained["manifest"]),
          "--backbone", "vgg16", "--weights", "none", "--image-size", "32", "--epochs", "1",
          "--batch-size", "4", "--run-dir", str(folder)])
    capsys.readouterr()

    assert main(["evaluate", "--workspace", str(workspace), str(folder)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "failed after 1 epoch without saving a model: no space left on device" in line
    assert "has not finished an epoch" not in line


def test_the_final_status_is_written_after_this_process_cleans_up(workspace, monkeypatch):
    """The disk is full while our own temporary file holds the space: the status write fails,
    the temporary file goes, and the write is retried."""
    run = copy_run(workspace, "run")
    run.update_status(state="running", pid=os.getpid())
    leftover = run.folder / f".model.keras.pid{os.getpid()}.tmp.keras"
    leftover.write_bytes(b"\0" * 1024)
    real = storage.write_bytes_atomic

    def write(path, data):
        if leftover.exists():
            full_disk()
        return real(path, data)

    monkeypatch.setattr(storage, "write_bytes_atomic", write)
    run.finish(state="failed", error="no space left on device", pid=None)

    assert not leftover.exists()
    assert run.status()["state"] == "failed" and temp_files(run.folder) == []


def test_with_no_room_for_a_temporary_file_the_status_is_rewritten_in_place(workspace,
                                                                           monkeypatch):
    run = copy_run(workspace, "run")
    run.update_status(state="running", pid=os.getpid())
    monkeypatch.setattr(storage, "write_bytes_atomic", full_disk)

    with pytest.raises(storage.StorageError, match="no space left on device .* while writing "
                                                   "the run's status"):
        run.update_status(stage="training")
    run.finish(state="failed", error="no space left on device", pid=None)
    assert run.status()["state"] == "failed" and run.status()["error"] == "no space left on device"


class FullFile:
    """An open file on a disk that fills up after what was written so far."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        full_disk()

    def close(self):
        self.handle.close()


def full_disk_after_the_header(monkeypatch) -> None:
    """The feature cache's .npy file gets its header, then the disk is full."""
    real = NpyWriter.__enter__

    def enter(self):
        real(self)
        self.handle = FullFile(self.handle)
        return self

    monkeypatch.setattr(NpyWriter, "__enter__", enter)


def test_a_full_disk_while_filling_the_feature_cache_leaves_no_partial_set(workspace, trained,
                                                                           monkeypatch):
    full_disk_after_the_header(monkeypatch)
    run = Run.create(workspace, TrainConfig(manifest=str(trained["manifest"]), epochs=1,
                                            **{**FAST, "batch_size": 2}, seed=7), "cache")
    status = train(run, workspace)

    cache = FeatureCache(workspace).root
    assert status["state"] == "failed"
    assert status["error"].startswith("no space left on device (")
    assert f"MB free in {cache}) while writing the feature cache" in status["error"]
    assert [p.name for p in cache.iterdir() if "partial" in p.name] == []
    assert run.status() == status and temp_files(run.folder) == []


def test_extract_from_the_cli_says_a_full_disk_in_one_line(workspace, trained, monkeypatch,
                                                           capsys):
    full_disk_after_the_header(monkeypatch)
    code = main(["extract", "--workspace", str(workspace), "--data", str(trained["manifest"]),
                 "--backbone", "vgg16", "--weights", "none", "--image-size", "32", "--seed", "9"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: no space left on device (")
    assert "Traceback" not in err
    assert [p for p in FeatureCache(workspace).root.iterdir() if "partial" in p.name] == []


# --- a process that vanished -----------------------------------------------------------------

def interrupted_run(workspace: Path) -> tuple[Run, int, int]:
    """The good run as kill -9 during its 4th epoch's save leaves it: the 4th epoch's line
    (better than any) is written, its model is not; status.json still says running."""
    run = copy_run(workspace, "killed")
    kept = run.status()["saved_epoch"]
    epochs = run.epochs()
    last = {**epochs[-1], "epoch": 4, "global_epoch": 4, "val_loss": 0.0001, "val_accuracy": 1.0}
    with open(run.folder / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(last) + "\n")
    set_json(run, "config.json", lambda config: {**config, "epochs": 5})
    set_json(run, "status.json", lambda status: {**status, "state": "running", "pid": dead_pid(),
                                                 "global_epoch": 4})
    return run, kept, 4


def test_a_run_whose_process_vanished_is_interrupted_and_keeps_its_model(workspace):
    run, kept, last = interrupted_run(workspace)
    assert kept != last

    status = run.status()
    assert status["state"] == "interrupted" and "ended without a final word" in status["error"]
    assert run.has_usable_model()
    summary = run.summary()
    assert summary["kept_epoch"] == kept
    assert summary["best_val_loss"] == run.epochs()[kept - 1]["val_loss"] != 0.0001
    assert summary_line(summary).startswith("killed: interrupted, 4/5 epochs, best val_accuracy")
    assert f"(model of epoch {kept})" in summary_line(summary)


def test_an_interrupted_run_with_a_cut_model_is_not_offered(workspace):
    run, _, _ = interrupted_run(workspace)
    data = run.model_path.read_bytes()
    run.model_path.write_bytes(data[: len(data) // 2])
    assert not run.has_usable_model()
    assert "model.keras in run killed is damaged or incomplete" in run.model_problem()


def test_curves_name_a_better_unsaved_epoch_of_an_interrupted_run_that_keeps_the_best(
        app_workspace):
    run, kept, last = interrupted_run(app_workspace)
    set_json(run, "config.json", lambda config: {**config, "monitor": "val_loss"})
    captions = texts(open_page("curves").caption)
    assert any(c.startswith(f"killed: best epoch {kept} ") for c in captions), captions
    assert any(f"Epoch {last} scored better, but its model was not saved" in c
               for c in captions)


@pytest.mark.parametrize("page", ["evaluate", "predict", "curves"])
def test_pages_offer_an_interrupted_runs_kept_model_with_its_epoch(app_workspace, page):
    run, kept, last = interrupted_run(app_workspace)
    at = open_page(page)
    sidebar = texts(at.sidebar.caption)
    assert any(f"interrupted · model of epoch {kept} kept" in c for c in sidebar), sidebar
    label = f"killed (vgg16, feature extraction) · interrupted · model of epoch {kept}"
    if page == "curves":
        assert at.multiselect(key="curve_runs").value == ["killed"]
        captions = texts(at.caption)
        assert any(c.startswith(f"killed: epoch {kept} ") and "the last saved" in c
                   for c in captions), captions
        return
    picker = at.selectbox(key=f"{page}_run")
    assert picker.value == "killed" and label in picker.options
    if page == "evaluate":
        [start] = [b for b in at.button if b.label == "Evaluate on the test split"]
        start.click().run()
        assert_no_exception(at)
        assert {m.label for m in at.metric} >= {"Test accuracy", "Test images"}


# --- leftovers of killed writers -------------------------------------------------------------

def test_leftovers_of_dead_writers_are_removed_at_the_next_start(workspace):
    dead, alive = dead_pid(), os.getpid()
    features = workspace / "cache" / "features"
    features.mkdir(parents=True, exist_ok=True)
    run = workspace / "runs" / "good"
    stale = [features / f".abc.partial.pid{dead}.x1", run / f".status.json.pid{dead}.q1.tmp",
             run / f".model.keras.pid{dead}.tmp.keras", run / f".model-{dead}.tmp.keras",
             workspace / "cache" / f".throughput.json.pid{dead}.z.tmp",
             features / ".old.partial-legacy"]
    live = [features / f".abc.partial.pid{alive}.x2", run / f".status.json.pid{alive}.q2.tmp",
            features / ".new.partial-legacy"]
    hidden_run = workspace / "runs" / f".run.pid{dead}.tmp"  # a folder, named by a user
    shutil.copytree(run, hidden_run)
    for path in stale + live:
        if "partial" in path.name:
            path.mkdir()
            (path / "features.npy").write_bytes(b"\0" * 64)
        else:
            path.write_bytes(b"\0" * 64)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(features / ".old.partial-legacy", (two_days_ago, two_days_ago))

    FeatureCache(workspace)  # a new extraction or training starts
    assert not (features / f".abc.partial.pid{dead}.x1").exists()
    assert not (features / ".old.partial-legacy").exists()  # no pid, and a day old
    removed = jobs.remove_leftovers(workspace)  # a worker or the app starts
    assert {p.name for p in removed} == {p.name for p in stale[1:5]}
    assert [p for p in stale if p.exists()] == []
    assert [p for p in live if not p.exists()] == []  # a live writer's files are never touched
    assert (hidden_run / "model.keras").exists()  # only partial feature sets are folders
    assert Run(run).has_usable_model()


# --- the Train page on a full disk -----------------------------------------------------------

def test_train_page_carries_on_when_the_throughput_cache_cannot_be_written(app_workspace,
                                                                           monkeypatch):
    real = storage.write_json_atomic

    def write(path, data):
        if Path(path).name == "throughput.json":
            full_disk()
        return real(path, data)

    monkeypatch.setattr(storage, "write_json_atomic", write)
    at = open_page("train", size_vgg16=32)

    assert_no_exception(at)
    [warning] = [w for w in texts(at.warning) if "not remembered" in w]
    assert "no space left on device (" in warning
    assert any("images/s here" in c for c in texts(at.caption))
    assert "Start training" in [b.label for b in at.button]
    assert not (app_workspace / "cache" / "throughput.json").exists()
    assert temp_files(app_workspace / "cache") == []
