"""Run settings and run lifetimes: validation that names the setting, background training that
queues and stops, and a worker that died reading as interrupted."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_folder_dataset
from test_training import FAST
from transfer_core import jobs
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.errors import BackboneError, RunError
from transfer_core.predict import load_model
from transfer_core.runs import Run, TrainConfig


@pytest.mark.parametrize("setting, value, words", [
    ("strategy", "transfer", "strategy must be one of from_scratch, feature_extraction"),
    ("epochs", 0, "epochs must be at least 1"),
    ("learning_rate", 0.0, "learning_rate must be positive"),
    ("fine_tune_learning_rate", -1e-5, "fine_tune_learning_rate must be positive"),
    ("batch_size", 0, "batch_size must be at least 1"),
    ("image_size", 16, "image_size must be between 32 and 1024"),
    ("preprocessing", "scale", "preprocessing must be backbone or rescale"),
    ("pooling", "max", "pooling must be flatten or avg"),
    ("dense_units", -1, "dense_units must be at least 0"),
    ("standardize", 1, "standardize must be bool"),
    ("weight_decay", -1e-3, "weight_decay must be at least 0"),
    ("dropout", 1.0, "dropout must be in [0, 1)"),
    ("monitor", "accuracy", "monitor must be one of val_loss, val_accuracy"),
    ("early_stopping_patience", 0, "early_stopping_patience must be at least 1"),
])
def test_a_bad_setting_is_named_in_the_error(setting, value, words):
    with pytest.raises(RunError) as error:
        TrainConfig(manifest="m.json", **{setting: value})
    assert words in str(error.value)
    assert repr(value) in str(error.value)  # and the value given


def test_a_standardized_head_needs_averaged_features():
    with pytest.raises(RunError, match="standardize must be off with pooling flatten"):
        TrainConfig(manifest="m.json", standardize=True)  # the chapter's pooling: flatten
    assert TrainConfig(manifest="m.json", standardize=True, pooling="avg").standardize is True


def test_fine_tune_epochs_only_matter_for_fine_tuning():
    with pytest.raises(RunError, match="fine_tune_epochs must be at least 1"):
        TrainConfig(manifest="m.json", strategy="fine_tune", fine_tune_epochs=0)
    config = TrainConfig(manifest="m.json", strategy="feature_extraction", fine_tune_epochs=0)
    assert config.total_epochs == config.epochs


def test_an_unknown_backbone_is_named():
    with pytest.raises(BackboneError, match="'resnet9'.*vgg16"):
        TrainConfig(manifest="m.json", backbone="resnet9")


def test_defaults_follow_the_backbone():
    config = TrainConfig(manifest="m.json", backbone="mobilenet_v2")
    assert (config.image_size, config.fine_tune_from) == (160, "block_16_expand")


# --- a worker that died ----------------------------------------------------------------------

@pytest.fixture
def idle_run(tmp_path) -> Run:
    config = TrainConfig(manifest="m.json", classes=["a", "b"], **FAST)
    return Run.create_in(tmp_path / "run", config)


def test_a_run_whose_worker_died_reads_as_interrupted(idle_run):
    assert idle_run.status()["state"] == "queued"  # created, no worker yet: waiting
    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    worker.wait()
    idle_run.update_status(state="running", pid=worker.pid, epoch=3)
    status = idle_run.status()
    assert status["state"] == "interrupted"
    assert "ended without a final word" in status["error"] and "log.txt" in status["error"]
    assert status["epoch"] == 3  # what it did before dying is still shown
    assert idle_run.summary()["state"] == "interrupted"
    assert "has not finished an epoch yet" in idle_run.model_problem()


def test_a_finished_but_unreaped_worker_reads_as_interrupted(idle_run):
    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 10
        while Path(f"/proc/{worker.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
            assert time.time() < deadline, "the child did not exit"
            time.sleep(0.05)
        idle_run.update_status(state="queued", pid=worker.pid)
        assert idle_run.status()["state"] == "interrupted"
    finally:
        worker.wait()


def test_a_running_worker_reads_as_running(idle_run):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        idle_run.update_status(state="running", pid=worker.pid)
        assert idle_run.status()["state"] == "running"
        assert idle_run.status().get("error") is None
    finally:
        worker.kill()
        worker.wait()


# --- background runs: queue and stop ---------------------------------------------------------

def _wait(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def test_a_queued_run_waits_and_a_stopped_run_keeps_its_best_model(tmp_path):
    workspace = tmp_path / "workspace"
    data = make_folder_dataset(tmp_path / "colours", per_class=6)
    manifest = str(split(scan(data), SplitRequest(counts=(4, 2, 0))).save(workspace, "jobs"))
    long = TrainConfig(manifest=manifest, strategy="feature_extraction_augmented",
                       **{**FAST, "batch_size": 4}, epochs=10_000, view_bank=0)
    first = jobs.start(workspace, long, "first")
    try:
        _wait(lambda: first.epochs() or first.status()["state"] not in ("queued", "running"),
              120, "the first epoch")
        assert first.status()["state"] == "running", first.status()
        assert jobs.active_run(workspace).name == "first"

        second = jobs.start(workspace, TrainConfig(manifest=manifest, epochs=1, **FAST), "second")
        time.sleep(3)  # the second worker is up and waiting for the slot
        for _ in range(3):
            assert second.status()["state"] == "queued", second.status()
            assert jobs.queue_position(second, workspace) == 1
            assert jobs.queue_position(first, workspace) is None
            time.sleep(0.5)

        epochs_at_stop = len(first.epochs())
        jobs.stop(first)
        asked = time.time()
        _wait(lambda: first.status()["state"] != "running", 20, "the first run to stop", 0.1)
        assert time.time() - asked < 10
        status = first.status()
        assert status["state"] == "stopped", status
        assert status["pid"] is None and status["finished"] >= asked
        assert len(first.epochs()) <= epochs_at_stop + 1  # it did not go on training
        model = load_model(first.model_path)  # the best epoch so far, whole and loadable
        assert model.output_shape == (None, 3)

        _wait(lambda: second.status()["state"] not in ("queued", "running"), 120,
              "the second run to finish")
        assert second.status()["state"] == "finished", second.status()
        assert second.status()["started"] >= status["finished"]  # not before the slot was free
        assert jobs.queue_position(second, workspace) is None
        assert len(second.epochs()) == 1 and second.model_path.exists()
    finally:
        for run in [first] + ([second] if "second" in locals() else []):
            jobs.stop(run)  # never leave a worker training after a failed assertion


def test_sigterm_stops_a_run_like_the_stop_button(tmp_path):
    import os
    import signal

    workspace = tmp_path / "workspace"
    data = make_folder_dataset(tmp_path / "colours", per_class=6)
    manifest = str(split(scan(data), SplitRequest(counts=(4, 2, 0))).save(workspace, "sig"))
    config = TrainConfig(manifest=manifest, strategy="feature_extraction_augmented",
                         **{**FAST, "batch_size": 4}, epochs=10_000, view_bank=0)
    run = jobs.start(workspace, config, "sig")
    try:
        _wait(lambda: run.epochs() or run.status()["state"] not in ("queued", "running"),
              120, "the first epoch")
        os.kill(run.status()["pid"], signal.SIGTERM)
        asked = time.time()
        _wait(lambda: run.status()["state"] != "running", 20, "the run to stop", 0.1)
        assert run.status()["state"] == "stopped", run.status()
        assert time.time() - asked < 10
        assert load_model(run.model_path).output_shape == (None, 3)
    finally:
        jobs.stop(run)


def test_the_last_epoch_is_kept_unless_early_stopping_or_a_score_is_asked_for():
    from transfer_core.runs import TrainConfig, monitor_for

    assert TrainConfig.monitor == "last"  # the chapter's rule, and the measured best
    assert monitor_for(None, None) == "last"
    assert monitor_for(None, 5) == "val_loss"  # early stopping watches the validation loss
    assert monitor_for("val_accuracy", 5) == "val_accuracy"
