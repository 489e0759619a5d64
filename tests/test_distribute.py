"""tf.distribute: the strategy each --distribute setting takes, its one-line errors, and the
same weights from one device, two mirrored devices and two worker processes.

Logical devices and TF_CONFIG must be set before TensorFlow starts, so every training here is
a `python -m transfer_core train` process of its own, as a user runs it on each machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_folder_dataset
from transfer_core.cli import main
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.distribute import (Cluster, DistributeError, cluster_from_environment,
                                      requested_cpu_devices, resolve, writes_run_files)
from transfer_core.errors import RunError
from transfer_core.runs import Run, TrainConfig

PROJECT = Path(__file__).resolve().parents[1]
# Every replica sees the same global batch, so the weights differ only by the order in which
# float32 sums are added (3e-8 measured, weights of 0.01-0.5); one batch trained differently
# (another order, another split of the loss) moved them by more than 1e-3.
TOLERANCE = 1e-5
# No dropout: its masks are drawn per replica, so with it runs agree in distribution only.
TRAIN = ["--backbone", "vgg16", "--weights", "none", "--image-size", "32", "--epochs", "2",
         "--batch-size", "8", "--learning-rate", "2e-3", "--dropout", "0",
         "--precision", "float32", "--settings", "chapter"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "TRANSFER_LAB_CPU_DEVICES")}
    return {**env, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _train(manifest, workspace, run_dir, distribute, **env) -> subprocess.Popen:
    args = [sys.executable, "-m", "transfer_core", "train", "--data", str(manifest),
            "--workspace", str(workspace), "--distribute", distribute, *TRAIN]
    if run_dir is not None:
        args += ["--run-dir", str(run_dir)]
    return subprocess.Popen(args, cwd=PROJECT, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process, seconds=240) -> str:
    out, err = process.communicate(timeout=seconds)
    assert process.returncode == 0, err[-3000:]
    return out


def _head_weights(run_folder) -> list[np.ndarray]:
    from transfer_core.predict import load_model

    model = load_model(Path(run_folder) / "model.keras")
    return model.get_layer("head").get_weights()


def _assert_same_weights(ours, reference):
    assert [w.shape for w in ours] == [w.shape for w in reference]
    for mine, theirs in zip(ours, reference):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute")
    colours = make_folder_dataset(root / "colours", per_class=16)
    return split(scan(colours, workers=1), SplitRequest(counts=(12, 4, 0))).save(
        root / "workspace", "colours")


@pytest.fixture(scope="module")
def one_device(manifest, tmp_path_factory):
    """The reference: the same command on one device."""
    folder = tmp_path_factory.mktemp("one") / "run"
    _finish(_train(manifest, folder.parent / "workspace", folder, "none"))
    return folder


# --- the weights: one device, two mirrored devices, two workers ------------------------------

def test_two_mirrored_cpu_devices_train_the_weights_of_one(manifest, one_device, tmp_path):
    folder = tmp_path / "run"
    _finish(_train(manifest, tmp_path / "workspace", folder, "mirrored",
                   TRANSFER_LAB_CPU_DEVICES="2"))
    status = Run(folder).status()
    assert status["state"] == "finished"
    assert status["distribute"] | {"asked": None} == {
        "strategy": "mirrored", "asked": None, "replicas": 2, "devices": ["/cpu:0", "/cpu:1"],
        "global_batch": 8, "per_replica_batch": 4.0,
        "learning_rate": "as configured: the batch is global"}
    assert Run(one_device).status()["distribute"]["replicas"] == 1
    _assert_same_weights(_head_weights(folder), _head_weights(one_device))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_worker_processes_train_the_weights_of_one(manifest, one_device, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": {"worker": workers},
                             "task": {"type": "worker", "index": index}})
        # Each its own workspace, as on two machines; only the chief is given a run folder.
        run_dir = tmp_path / "chief-run" if index == 0 else None
        processes.append(_train(manifest, tmp_path / f"workspace{index}", run_dir,
                                "multi-worker", TF_CONFIG=config))
    try:
        outputs = [_finish(p) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert "worker 1: finished" in outputs[1]
    status = Run(tmp_path / "chief-run").status()
    assert status["state"] == "finished"
    assert status["distribute"]["strategy"] == "multi-worker"
    assert status["distribute"]["workers"] == workers
    assert status["distribute"]["replicas"] == 2
    # The other worker wrote no run: its files went to a scratch folder, now removed.
    runs = tmp_path / "workspace1" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    _assert_same_weights(_head_weights(tmp_path / "chief-run"), _head_weights(one_device))


# --- the choice of strategy ------------------------------------------------------------------

def _cluster(workers=2, index=0):
    return Cluster(tuple(f"h{i}:1000" for i in range(workers)), index)


@pytest.mark.parametrize("cluster, gpus, chosen", [
    (None, 0, "none"), (None, 1, "none"), (None, 4, "mirrored"),
    (_cluster(2), 0, "multi-worker"), (_cluster(2), 4, "multi-worker"), (_cluster(1), 0, "none"),
])
def test_auto_takes_the_machines_then_the_gpus_then_one_device(cluster, gpus, chosen):
    assert resolve("auto", cluster, gpus) == chosen


def test_asked_settings_are_kept_when_the_machine_has_them():
    assert resolve("none", _cluster(2), 4) == "none"
    assert resolve("mirrored", None, 2) == "mirrored"
    assert resolve("mirrored", None, 0, cpu_devices=2) == "mirrored"
    assert resolve("multi-worker", _cluster(1), 0) == "multi-worker"


@pytest.mark.parametrize("setting, cluster, gpus, words", [
    ("mirrored", None, 1, "--distribute mirrored needs at least two devices, and this machine "
                          "has 1 GPU"),
    ("mirrored", None, 0, "has no GPUs: use --distribute none or auto"),
    ("multi-worker", None, 0, "--distribute multi-worker needs TF_CONFIG"),
    ("everywhere", None, 0, "distribute must be one of auto, none, mirrored, multi-worker "
                            "(got 'everywhere')"),
])
def test_a_setting_the_machine_cannot_give_is_one_line(setting, cluster, gpus, words):
    with pytest.raises(DistributeError) as error:
        resolve(setting, cluster, gpus)
    assert words in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("tf_config, words", [
    ("{not json", "it is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'it has no "cluster" object'),
    ('{"cluster": {"worker": ["host-without-port"]}, "task": {"type": "worker", "index": 0}}',
     'cluster "worker" must be a list of "host:port" strings'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     '"task" must name this process in the cluster, as {"type": "worker", "index": 0 to 1}'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', '"task" must name this process'),
])
def test_a_bad_tf_config_is_one_line_that_says_what_to_set(tf_config, words):
    with pytest.raises(DistributeError) as error:
        cluster_from_environment({"TF_CONFIG": tf_config})
    message = str(error.value)
    assert message.startswith("TF_CONFIG cannot be used: ") and words in message
    assert "unset it to train on this machine alone" in message and "\n" not in message


def test_tf_config_names_the_workers_and_this_ones_place():
    cluster = cluster_from_environment({"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})})
    assert cluster == Cluster(("a:1", "b:2"), 1) and not cluster.is_chief
    assert cluster_from_environment({"TF_CONFIG": " "}) is None
    assert cluster_from_environment({}) is None


def test_a_chief_task_is_the_chief_and_the_workers_follow_it():
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:2"]}}
    chief = cluster_from_environment({"TF_CONFIG": json.dumps(
        {**with_chief, "task": {"type": "chief", "index": 0}})})
    worker0 = cluster_from_environment({"TF_CONFIG": json.dumps(
        {**with_chief, "task": {"type": "worker", "index": 0}})})
    assert chief.is_chief and chief.workers == ("c:1", "a:1", "b:2")
    assert not worker0.is_chief and worker0.index == 1


def test_only_the_chief_writes_run_files():
    def env(index):
        return {"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                         "task": {"type": "worker", "index": index}})}
    assert writes_run_files("multi-worker", env(0)) and writes_run_files("auto", env(0))
    assert not writes_run_files("multi-worker", env(1)) and not writes_run_files("auto", env(1))
    assert writes_run_files("none", env(1))  # TF_CONFIG set, but asked to train alone
    assert writes_run_files("auto", {})


def test_cpu_devices_must_be_a_small_whole_number():
    assert requested_cpu_devices({}) == 1
    assert requested_cpu_devices({"TRANSFER_LAB_CPU_DEVICES": "2"}) == 2
    with pytest.raises(DistributeError, match="TRANSFER_LAB_CPU_DEVICES must be a whole number "
                                              "from 1 to 64 \\(got 'two'\\)"):
        requested_cpu_devices({"TRANSFER_LAB_CPU_DEVICES": "two"})


def test_a_config_from_before_distribute_loads_with_auto():
    config = TrainConfig.from_dict({"manifest": "m.json", "classes": ["a", "b"]})
    assert config.distribute == "auto"
    with pytest.raises(RunError, match="distribute must be one of auto, none, mirrored, "
                                       "multi-worker \\(got 'gpu'\\)"):
        TrainConfig.from_dict({"manifest": "m.json", "distribute": "gpu"})


# --- the command line --------------------------------------------------------------------------

@pytest.mark.parametrize("environment, distribute, words", [
    ({}, "mirrored", "error: --distribute mirrored needs at least two devices"),
    ({"TF_CONFIG": "{oops"}, "auto", "error: TF_CONFIG cannot be used: it is not JSON"),
    ({}, "multi-worker", "error: --distribute multi-worker needs TF_CONFIG"),
])
def test_cli_says_what_to_do_in_one_line_before_making_a_run(manifest, tmp_path, monkeypatch,
                                                            capsys, environment, distribute,
                                                            words):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TRANSFER_LAB_CPU_DEVICES", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code = main(["train", "--data", str(manifest), "--workspace", str(tmp_path),
                 "--distribute", distribute, *TRAIN])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(words) and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
