"""Training runs end to end: what each strategy leaves in its run folder, and what it froze.

The three strategies train once each (VGG16 with random weights at 32 px separates the colour
classes in a few epochs) and every test here reads those runs, as a user's page would.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from conftest import make_folder_dataset
from transfer_core.backbones import BACKBONES, build_base
from transfer_core.datasets import SplitRequest, load_manifest, scan, split
from transfer_core.errors import RunError
from transfer_core.predict import load_model
from transfer_core.runs import Run, TrainConfig
from transfer_core.storage import read_json
from transfer_core.strategies import (build_base_for, build_full_model, build_head,
                                      check_frozen_unchanged, freeze_base, output_spec,
                                      phase_audit, unfreeze_from)
from transfer_core.training import RunRecorder, train, training_phases

STRATEGIES = ("feature_extraction", "feature_extraction_augmented", "fine_tune")
FAST = dict(backbone="vgg16", weights="none", image_size=32, learning_rate=2e-3, batch_size=4)
# view_bank=0: these runs cover the on-the-fly path, the chapter's (test_viewbank.py the bank).
SETTINGS = {
    "feature_extraction": dict(epochs=6),
    "feature_extraction_augmented": dict(epochs=5, view_bank=0),
    "fine_tune": dict(epochs=4, fine_tune_epochs=2, view_bank=0),
}
PER_CLASS, COUNTS = 45, (30, 5, 10)  # per class: training, validation, test images
_TRAINED: dict = {}


def trained_runs(tmp_path_factory) -> dict:
    """Train each strategy once per test session (3 colours), plus a two-class run.

    Shared by the test modules through this function rather than a conftest fixture, so the
    runs are trained once however many modules read them.
    """
    if not _TRAINED:
        root = tmp_path_factory.mktemp("trained")
        workspace = root / "workspace"
        colours = make_folder_dataset(root / "colours", PER_CLASS)
        manifest = split(scan(colours, workers=1), SplitRequest(counts=COUNTS)).save(
            workspace, "colours")
        runs = {}
        for strategy in STRATEGIES:
            config = TrainConfig(manifest=str(manifest), strategy=strategy, **FAST,
                                 **SETTINGS[strategy])
            runs[strategy] = Run.create(workspace, config, strategy)
            train(runs[strategy], workspace)
        pair = make_folder_dataset(root / "pair", PER_CLASS, classes=("red", "blue"))
        pair_manifest = split(scan(pair, workers=1), SplitRequest(counts=COUNTS)).save(
            workspace, "pair")
        binary = Run.create(workspace, TrainConfig(manifest=str(pair_manifest), epochs=6, **FAST),
                            "binary")
        train(binary, workspace)
        _TRAINED.update(workspace=workspace, manifest=manifest, runs=runs, binary=binary)
    return _TRAINED


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_runs(tmp_path_factory)


@pytest.fixture(params=STRATEGIES)
def strategy_run(request, trained) -> Run:
    return trained["runs"][request.param]


# --- the run folder --------------------------------------------------------------------------

def test_config_json_repeats_the_run(strategy_run, trained):
    saved = read_json(strategy_run.folder / "config.json")
    config = TrainConfig.from_dict(saved)
    assert config.to_dict() == saved  # nothing lost or defaulted differently on a re-read
    assert saved["classes"] == ["blue", "green", "red"]
    assert saved["manifest"] == str(trained["manifest"])
    assert load_manifest(saved["manifest"]).classes == saved["classes"]
    expected = {**FAST, **SETTINGS[strategy_run.name], "strategy": strategy_run.name}
    assert {key: saved[key] for key in expected} == expected
    assert saved["seed"] == 1337 and saved["fine_tune_from"] == "block5_conv1"
    assert saved["augmentation"]["rotation_degrees"] == 40.0


def test_status_json_says_finished_with_times(strategy_run):
    status = read_json(strategy_run.folder / "status.json")
    assert status["state"] == "finished"
    assert status["error"] is None and status["pid"] is None
    assert status["created"] <= status["started"] < status["finished"]
    assert status["global_epoch"] == status["total_epochs"] == strategy_run.config.total_epochs
    assert 1 <= status["best"]["global_epoch"] <= status["total_epochs"]
    assert strategy_run.status() == status  # a finished run reads as recorded


def test_a_fast_last_epoch_still_shows_as_done(tmp_path):
    """Batch progress is throttled; the epoch's end must still move the status on."""
    config = TrainConfig(manifest="m.json", classes=["a", "b"], epochs=2, **FAST)
    run = Run.create_in(tmp_path / "run", config)
    recorder = RunRecorder(run, None, training_phases(config)[0], steps=1, total_epochs=2,
                           monitor="val_loss")
    for epoch in range(2):  # both epochs inside the half-second throttle
        recorder.on_epoch_begin(epoch)
        recorder.on_train_batch_end(0, {"loss": 0.5})
        recorder.on_epoch_end(epoch, {"loss": 0.5})  # no val_loss: nothing to save
    status = run.status()
    assert (status["epoch"], status["global_epoch"], status["total_epochs"]) == (2, 2, 2)
    assert status["progress"]["done"] == 2 and status["progress"]["eta_seconds"] == 0


def test_the_time_left_is_the_phases_when_another_phase_follows(tmp_path):
    """fine_tune's head epochs on cached features take seconds, its fine-tuning epochs on the
    fly a minute: the head's pace says nothing of the phase after it, so the time left covers
    its own epochs only, and says so."""
    config = TrainConfig(manifest="m.json", classes=["a", "b"], strategy="fine_tune",
                         epochs=2, fine_tune_epochs=3, **FAST)
    run = Run.create_in(tmp_path / "run", config)
    head, fine = training_phases(config)
    recorder = RunRecorder(run, None, head, steps=1, total_epochs=5, monitor="val_loss")
    recorder.on_epoch_begin(0)
    recorder.started -= 10  # the first head epoch took 10 s
    recorder.on_epoch_end(0, {"loss": 0.5})
    progress = run.status()["progress"]
    assert 9 < progress["eta_seconds"] < 12 and progress["eta_scope"] == "phase"  # not 40 s
    recorder = RunRecorder(run, None, fine, steps=1, total_epochs=5, monitor="val_loss")
    recorder.on_epoch_begin(2)
    recorder.started -= 60  # the first fine-tuning epoch took a minute
    recorder.on_epoch_end(2, {"loss": 0.4})
    progress = run.status()["progress"]
    assert 110 < progress["eta_seconds"] < 130 and progress["eta_scope"] == "run"


def test_metrics_have_one_epoch_line_per_epoch_and_phase(strategy_run):
    config = strategy_run.config
    epochs = strategy_run.epochs()
    expected = [("head", 1, n) for n in range(1, config.epochs + 1)]
    if config.strategy == "fine_tune":
        expected += [("fine_tune", 2, n) for n in range(1, config.fine_tune_epochs + 1)]
    assert [(e["phase_name"], e["phase"], e["epoch"]) for e in epochs] == expected
    assert [e["global_epoch"] for e in epochs] == list(range(1, config.total_epochs + 1))
    for record in epochs:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert isinstance(record[key], float) and math.isfinite(record[key]), (key, record)
        assert 0 <= record["accuracy"] <= 1 and 0 <= record["val_accuracy"] <= 1
        assert record["seconds"] >= 0


def test_metrics_have_progress_lines_in_every_phase(strategy_run):
    progress = [r for r in strategy_run.metrics() if r["type"] == "progress"]
    assert {r["phase"] for r in progress} == set(strategy_run.config.phases)
    for record in progress:
        assert record["batches"] == math.ceil(COUNTS[0] * 3 / FAST["batch_size"])
        assert 1 <= record["batch"] <= record["batches"]
        assert math.isfinite(record["loss"])
    times = [r["time"] for r in strategy_run.metrics()]
    assert times == sorted(times)


def test_model_keras_is_the_kept_epoch_and_loads(strategy_run):
    model = load_model(strategy_run.model_path)
    assert model.output_shape == (None, 3)
    best = strategy_run.status()["best"]
    epochs = strategy_run.epochs()
    monitor = strategy_run.config.monitor
    kept = (epochs[-1] if monitor == "last" else
            min(epochs, key=lambda e: e[monitor] * (-1 if monitor == "val_accuracy" else 1)))
    assert best["global_epoch"] == kept["global_epoch"] == strategy_run.status()["saved_epoch"]


def test_saved_model_has_no_augmentation(trained):
    """Augmentation does nothing at inference, and Keras cannot load RandomShear back."""
    model = load_model(trained["runs"]["feature_extraction_augmented"].model_path)
    assert [layer.name for layer in model.layers] == ["image", "resize", "preprocess", "vgg16",
                                                      "head"]


# --- the freeze audit ------------------------------------------------------------------------

def test_audit_has_one_entry_per_phase(strategy_run):
    audit = read_json(strategy_run.folder / "audit.json")
    assert audit["strategy"] == strategy_run.name
    assert [p["phase"] for p in audit["phases"]] == strategy_run.config.phases
    for phase in audit["phases"]:
        assert phase["frozen_layers_changed"] == []
        assert phase["frozen_layers_checked"] == len(phase["frozen_layer_checksums"]) > 0


def test_chapter_30_weight_tensors_before_freezing_4_after(strategy_run):
    head = strategy_run.audit()["phases"][0]
    assert head["phase"] == "head"
    assert head["trainable_weight_tensors_if_base_unfrozen"] == 30
    assert head["trainable_weight_tensors"] == 4
    assert head["trainable_layers"] == ["dense", "predictions"]
    assert sorted(head["layers_changed"]) == ["dense", "predictions"]  # the head did train
    assert len(head["frozen_layer_checksums"]) == 13  # every conv layer of VGG16


def test_fine_tune_phase_trains_exactly_from_the_boundary(trained):
    config = trained["runs"]["fine_tune"].config
    phase = trained["runs"]["fine_tune"].audit()["phases"][1]
    base = build_base("vgg16", "none", 32)
    names = [layer.name for layer in base.layers]
    boundary = names.index(config.fine_tune_from)
    expected = [layer.name for layer in base.layers[boundary:] if layer.weights]
    assert expected == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert phase["phase"] == "fine_tune"
    assert phase["trainable_layers"] == expected + ["dense", "predictions"]
    assert phase["trainable_weight_tensors"] == 2 * len(phase["trainable_layers"])
    below = [layer.name for layer in base.layers[:boundary] if layer.weights]
    assert sorted(phase["frozen_layer_checksums"]) == sorted(below)
    assert phase["frozen_layers_changed"] == []
    assert set(expected) <= set(phase["layers_changed"])  # the unfrozen block really trained


@pytest.fixture(scope="module")
def vgg_model():
    config = TrainConfig(manifest="unused.json", classes=["a", "b", "c"], **FAST)
    base = build_base_for(config)
    head = build_head(base.output.shape[1:], 3, config)
    model = build_full_model(base, head, config, augment=False)
    freeze_base(base)
    return model, base


def test_check_frozen_unchanged_catches_a_modified_frozen_layer(vgg_model):
    model, base = vgg_model
    audit = phase_audit(model, base, "head")
    assert check_frozen_unchanged(model, dict(audit))["frozen_layers_changed"] == []
    kernel = base.get_layer("block3_conv2").kernel
    original = keras.ops.convert_to_numpy(kernel)
    kernel.assign(original + 1e-3)
    try:
        with pytest.raises(RunError, match="block3_conv2"):
            check_frozen_unchanged(model, audit)
        assert audit["frozen_layers_changed"] == ["block3_conv2"]
    finally:
        kernel.assign(original)


def test_batchnorm_stays_in_inference_mode_when_unfrozen():
    config = TrainConfig(manifest="unused.json", classes=["a", "b", "c"], backbone="mobilenet_v2",
                         weights="none", image_size=32, strategy="fine_tune")
    base = build_base_for(config)
    model = build_full_model(base, build_head(base.output.shape[1:], 3, config), config,
                             augment=True)
    freeze_base(base)
    unfrozen = unfreeze_from(base, BACKBONES["mobilenet_v2"].fine_tune_from)
    assert unfrozen[0] == "block_16_expand" and "Conv_1" in unfrozen
    assert base.get_layer("block_16_depthwise").trainable
    assert not base.get_layer("block_15_expand").trainable
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert any(layer.name == "Conv_1_bn" for layer in norms)
    before = [[keras.ops.convert_to_numpy(w) for w in layer.non_trainable_weights]
              for layer in norms]
    images = np.random.default_rng(0).uniform(0, 255, (4, 40, 40, 3)).astype("float32")
    model(images, training=True)  # what fit() does on every batch
    after = [[keras.ops.convert_to_numpy(w) for w in layer.non_trainable_weights]
             for layer in norms]
    moved = [layer.name for layer, b, a in zip(norms, before, after)
             if any(not np.array_equal(x, y) for x, y in zip(b, a))]
    assert moved == []


# --- the output layer ------------------------------------------------------------------------

def test_two_classes_use_sigmoid_and_more_use_softmax(trained):
    assert output_spec(2) == (1, "sigmoid", "binary_crossentropy")
    assert output_spec(3) == (3, "softmax", "sparse_categorical_crossentropy")
    assert output_spec(5) == (5, "softmax", "sparse_categorical_crossentropy")
    three = load_model(trained["runs"]["feature_extraction"].model_path).get_layer("head")
    assert three.get_layer("predictions").activation.__name__ == "softmax"
    assert three.output_shape == (None, 3)
    binary = trained["binary"]
    assert binary.config.classes == ["blue", "red"]
    assert binary.status()["state"] == "finished"
    two = load_model(binary.model_path).get_layer("head")
    assert two.get_layer("predictions").activation.__name__ == "sigmoid"
    assert two.output_shape == (None, 1)
