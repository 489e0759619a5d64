"""The view bank's size ("auto"), its float16 storage, and the "last epoch" rule.

"auto" gives each view about three readings within the disk the cache may use; a bank stored
in float16 takes half the disk and trains the head as its float32 copy would; "last" keeps the
last epoch's model even when validation loss rose.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_folder_dataset
from transfer_core.bank import choose_views
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.errors import RunError
from transfer_core.evaluation import evaluate
from transfer_core.features import (FeatureCache, FeatureSpec, NpyWriter, bank_bytes,
                                     build_extractor, run_extractor, view_augmentation)
from transfer_core.runs import Run, TrainConfig
from transfer_core.strategies import build_head, compile_model
from transfer_core.training import ViewBank, train

GB = 2**30
TINY = dict(backbone="vgg16", weights="none", image_size=32, batch_size=6, learning_rate=1e-3,
            precision="float32")


def _config(strategy="feature_extraction_augmented", epochs=30, fine_tune_epochs=100,
            view_bank="auto", fine_tune_on_bank=False):
    return SimpleNamespace(strategy=strategy, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
                           view_bank=view_bank, fine_tune_on_bank=fine_tune_on_bank)


@pytest.mark.parametrize("strategy, epochs, fine_tune_epochs, on_bank, views", [
    ("feature_extraction_augmented", 30, 100, False, 10),  # the chapter's 30 epochs: 10 views
    ("feature_extraction_augmented", 5, 100, False, 3),  # never fewer than 3
    ("fine_tune", 30, 30, False, 10),  # the head alone reads the bank
    ("fine_tune", 30, 30, True, 20),  # both phases read it
    ("fine_tune", 30, 100, True, 30),  # 130 epochs would take 44: at most 30
    ("feature_extraction", 30, 100, False, 0),  # no bank at all
])
def test_auto_takes_a_view_per_three_epochs_that_read_the_bank(strategy, epochs,
                                                               fine_tune_epochs, on_bank, views):
    config = _config(strategy, epochs, fine_tune_epochs, fine_tune_on_bank=on_bank)
    chosen, reason = choose_views(config, GB, 1000 * GB)
    assert chosen == views
    assert reason


def test_auto_takes_fewer_views_when_the_disk_is_short_but_never_below_three():
    config = _config(epochs=60)  # wants 20 views
    assert choose_views(config, GB, 100 * GB)[0] == 20
    views, reason = choose_views(config, GB, 7.5 * GB)
    assert views == 7 and "do not fit" in reason and "20" in reason
    assert choose_views(config, GB, 0.5 * GB)[0] == 3  # the disk check then says what to do


def test_a_fixed_view_bank_is_kept_whatever_the_disk():
    assert choose_views(_config(view_bank=5), GB, 0)[0] == 5
    assert choose_views(_config(view_bank=0), GB, 0)[0] == 0


def test_view_bank_is_auto_by_default_and_rejects_other_words():
    assert TrainConfig(manifest="m.json").view_bank == "auto"
    with pytest.raises(RunError, match="view_bank must be auto or between 0 and 100"):
        TrainConfig(manifest="m.json", view_bank="many")
    with pytest.raises(RunError, match="view_bank"):
        TrainConfig(manifest="m.json", view_bank=101)


@pytest.mark.parametrize("stored", [3, 0, "auto"])
def test_a_run_config_written_before_auto_still_loads(tmp_path, stored):
    data = {**TrainConfig(manifest="m.json").to_dict(), "view_bank": stored}
    (tmp_path / "config.json").write_text(json.dumps(data))
    (tmp_path / "status.json").write_text(json.dumps({"state": "finished"}))
    assert Run(tmp_path).config.view_bank == stored
    assert Run(tmp_path).problem() is None


def test_last_refuses_early_stopping_in_one_line():
    with pytest.raises(RunError) as error:
        TrainConfig(manifest="m.json", monitor="last", early_stopping_patience=3)
    assert "early_stopping_patience" in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank16")
    data = make_folder_dataset(root / "data", per_class=8, size=32)
    manifest = split(scan(data, workers=1), SplitRequest(counts=(6, 2, 0), seed=0))
    manifest.save(root / "workspace", "tiny")
    return manifest, root / "workspace"


def test_a_float16_bank_takes_half_the_disk_and_trains_as_float32(tiny, tmp_path):
    manifest, workspace = tiny
    spec = FeatureSpec("vgg16", "none", 32, views=2, seed=5).resolved()
    bank = FeatureCache(workspace).extract(manifest, "train", spec)
    assert bank.features.dtype == np.float16
    images, shape = len(bank.labels), bank.features.shape[1:]
    float32_bytes = 4 * images * 2 * int(np.prod(shape))
    assert bank.features.nbytes == float32_bytes // 2 == bank_bytes(images, 2, shape)
    assert (bank.folder / "features.npy").stat().st_size - bank.features.nbytes < 256  # header
    # The same views written in float32 (the seeded draws repeat).
    paths = manifest.files("train")[0]
    with NpyWriter(tmp_path / "f32.npy", bank.features.shape) as out:
        run_extractor(build_extractor(spec), paths, 32, 32, out,
                      augmentation=view_augmentation(spec))
    full = np.load(tmp_path / "f32.npy")
    np.testing.assert_allclose(np.asarray(bank.features, "float32"), full, rtol=2e-3, atol=1e-4)
    labels = np.asarray(bank.labels, "int32")
    batch = ViewBank(bank.features, labels, 2, 6, seed=0)[0][0]
    assert batch.dtype == np.float32  # the model is fed float32
    predictions = [_trained_head(features, labels, shape) for features in (bank.features, full)]
    np.testing.assert_allclose(*predictions, atol=2e-3)


def _trained_head(features, labels, shape):
    import keras

    keras.utils.set_random_seed(0)
    head = build_head(shape, 3, TrainConfig(manifest="m.json", dense_units=16, dropout=0.0))
    compile_model(head, 3, 1e-3)
    head.fit(ViewBank(features, labels, 2, 6, seed=0), epochs=3, verbose=0)
    return head.predict(np.asarray(features[: len(labels)], "float32"), verbose=0)


def test_last_keeps_the_last_epoch_and_auto_fits_the_disk(tiny, monkeypatch):
    """A run with monitor "last" saves the last epoch's model (its validation loss is what the
    saved model scores), and "auto" takes the views that fit under the cache limit."""
    manifest, workspace = tiny
    per_view = bank_bytes(len(manifest.files("train")[0]), 1, (1, 1, 512))
    validation = bank_bytes(len(manifest.files("validation")[0]), 0, (1, 1, 512))
    limit = validation + 3.5 * per_view  # 12 epochs want 4 views: 3 fit
    monkeypatch.setenv("TRANSFER_LAB_CACHE_LIMIT_GB", str(limit / GB))
    config = TrainConfig(manifest=manifest.path, strategy="feature_extraction_augmented",
                         epochs=12, monitor="last", learning_rate=3e-2,
                         **{k: v for k, v in TINY.items() if k != "learning_rate"})
    run = Run.create(workspace, config)
    status = train(run, workspace)
    assert status["state"] == "finished", status.get("error")
    assert status["view_bank"]["views"] == 3 and "do not fit" in status["view_bank"]["reason"]
    epochs = run.epochs()
    assert status["saved_epoch"] == status["best"]["global_epoch"] == 12
    assert run.kept_epoch()["global_epoch"] == 12
    saved = evaluate(run, split="validation")
    assert saved["loss"] == pytest.approx(epochs[-1]["val_loss"], abs=1e-4)


@pytest.mark.parametrize("monitor, kept", [("last", 3), ("val_loss", 2)])
def test_last_keeps_the_final_epoch_when_validation_loss_rose(tmp_path, monitor, kept):
    """The rule itself, on epochs whose validation loss falls then rises: "last" saves the
    third epoch's model, "val_loss" keeps the second's."""
    import keras

    from transfer_core.training import RunRecorder, training_phases

    config = TrainConfig(manifest="m.json", classes=["a", "b"], epochs=3, monitor=monitor)
    run = Run.create_in(tmp_path / "run", config)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    recorder = RunRecorder(run, model, training_phases(config)[0], steps=1, total_epochs=3,
                           monitor=monitor)
    for epoch, val_loss in enumerate([0.5, 0.3, 0.9]):
        recorder.on_epoch_begin(epoch)
        recorder.on_epoch_end(epoch, {"loss": 0.4, "val_loss": val_loss, "val_accuracy": 0.5})
    status = run.status()
    assert status["saved_epoch"] == status["best"]["global_epoch"] == kept
    assert run.model_path.exists()


def test_blends_need_fine_tuning_on_the_bank_in_one_line():
    """Blends are of the stored views, which only fine-tuning on the bank reads: asked for
    without it they would change nothing, so the config says so instead of ignoring them."""
    with pytest.raises(RunError) as caught:
        TrainConfig(manifest="m.json", strategy="fine_tune", blend_reach=0.5)
    assert "blend_reach" in str(caught.value) and "\n" not in str(caught.value)
    config = TrainConfig(manifest="m.json", strategy="fine_tune", blend_reach=0.5,
                         fine_tune_on_bank=True)
    assert config.blend_reach == 0.5
