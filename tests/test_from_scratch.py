"""The from_scratch strategy: the chapter's small convnet trains from random weights, is saved,
loads back with safe_mode, and predicts and evaluates like the transfer strategies' models."""

from __future__ import annotations

import pytest
from conftest import make_folder_dataset

from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.errors import RunError
from transfer_core.evaluation import evaluate
from transfer_core.predict import Predictor, load_model
from transfer_core.runs import Run, TrainConfig
from transfer_core.training import train


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scratch")
    colours = make_folder_dataset(root / "colours", 20, size=48, classes=("red", "blue"))
    manifest = split(scan(colours, workers=1), SplitRequest(counts=(12, 4, 4))).save(
        root / "workspace", "pair")
    config = TrainConfig(manifest=str(manifest), strategy="from_scratch", backbone="mobilenet_v2",
                         weights="none", image_size=48, epochs=4, batch_size=4,
                         learning_rate=1e-3)
    run = Run.create(root / "workspace", config, "scratch")
    train(run, root / "workspace")
    return run


def test_trains_and_keeps_a_model(scratch_run):
    status = scratch_run.status()
    assert status["state"] == "finished", status.get("error")
    assert [r["global_epoch"] for r in scratch_run.epochs()] == [1, 2, 3, 4]
    assert scratch_run.model_problem() is None


def test_the_saved_model_is_the_chapters_convnet(scratch_run):
    model = load_model(scratch_run.model_path)  # safe_mode: no Python code in the file
    convnet = model.get_layer("convnet")
    filters = [layer.filters for layer in convnet.layers if hasattr(layer, "filters")]
    assert filters == [32, 64, 128, 128]
    head = model.get_layer("head")
    assert head.get_layer("dense").units == 512 and head.get_layer("dropout").rate == 0.5
    assert head.get_layer("predictions").activation.__name__ == "sigmoid"
    assert "augmentation" not in [layer.name for layer in model.layers]  # saved without it
    assert model.get_layer("preprocess").mode == "rescale"  # the chapter's 1/255


def test_the_audit_says_nothing_is_frozen(scratch_run):
    audit = scratch_run.audit()
    assert "nothing is frozen" in audit["note"]
    phase = audit["phases"][0]
    assert phase["frozen_layers_checked"] == 0
    assert phase["trainable_weight_tensors"] == phase["total_weight_tensors"]


def test_predicts_and_evaluates(scratch_run, tmp_path):
    from conftest import COLOURS, colour_image

    photo = tmp_path / "big_red.png"
    colour_image(COLOURS["red"], 120, seed=5).save(photo)  # any size: the model resizes
    [result] = Predictor(scratch_run).predict([str(photo)])
    assert result["label"] in ("blue", "red") and 0.5 <= result["confidence"] <= 1
    evaluation = evaluate(scratch_run)
    assert evaluation["images"] == 8 and 0 <= evaluation["accuracy"] <= 1


def test_explains_and_exports_like_the_transfer_strategies(scratch_run, tmp_path):
    import numpy as np

    from transfer_core.export import export_run

    predictor = Predictor(scratch_run)
    photos = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    _, maps = predictor.explainer().heatmaps(photos)
    assert maps.shape[0] == 2 and np.isfinite(maps).all()
    result = export_run(scratch_run, ["keras"], tmp_path)
    assert result["parity"][0]["agreement"] == 1.0


def test_too_small_an_image_is_refused_with_the_reason():
    with pytest.raises(RunError, match="at least 46 pixels for from_scratch"):
        TrainConfig(manifest="m.json", strategy="from_scratch", backbone="mobilenet_v2",
                    image_size=32, classes=["a", "b"])
