"""Class imbalance: the warning's rule, and class weights that change what a model learns on
every training path (cached features and the view bank through a PyDataset, on-the-fly
augmentation through tf.data)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import COLOURS, colour_image
from transfer_core.balance import class_weights, imbalance
from transfer_core.datasets import Manifest, load_manifest
from transfer_core.errors import RunError
from transfer_core.predict import Predictor
from transfer_core.runs import Run, TrainConfig
from transfer_core.storage import read_json
from transfer_core.training import train


def test_imbalance_is_named_above_one_and_a_half_times():
    assert imbalance({"cats": 150, "dogs": 100}) is None
    uneven = imbalance({"cats": 151, "dogs": 100, "fox": 120})
    assert (uneven["largest"], uneven["smallest"]) == ("cats", "dogs")
    assert uneven["ratio"] == pytest.approx(1.51)


def test_balanced_weights_make_each_class_add_the_same_to_the_loss():
    labels = [0] * 30 + [1] * 10
    weights = class_weights(labels, 2, "balanced")
    assert weights[0] * 30 == pytest.approx(weights[1] * 10)
    assert np.mean([weights[label] for label in labels]) == pytest.approx(1.0)
    assert class_weights(labels, 2, "none") is None


def test_an_unknown_class_weight_is_named():
    with pytest.raises(RunError, match="class_weight must be none or balanced"):
        TrainConfig(manifest="m.json", class_weight="inverse")


@pytest.fixture(scope="module")
def lookalike_manifest(tmp_path_factory):
    """Two classes of the same kind of picture, 3:1 in training: nothing tells them apart
    but their numbers, so an unweighted model leans to the large class."""
    root = tmp_path_factory.mktemp("lookalike")
    rows = []
    for c, (name, count) in enumerate((("many", 36), ("few", 12))):
        for i in range(count + 8):
            path = root / name / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            colour_image(COLOURS["green"], 32, seed=1000 * c + i).save(path)
            split = "train" if i < count else ("validation" if i < count + 4 else "test")
            rows.append((str(path), name, split))
    manifest = Manifest(str(root), ["few", "many"], rows, {"counts": [0, 0, 0]})
    return manifest.save(root / "workspace", "lookalike"), root / "workspace"


def _share_of_few(manifest_path, workspace, strategy, class_weight) -> float:
    config = TrainConfig(manifest=str(manifest_path), backbone="vgg16", weights="none",
                         image_size=32, batch_size=8, learning_rate=1e-3, epochs=6,
                         strategy=strategy, view_bank=0, class_weight=class_weight)
    run = Run.create(workspace, config, f"{strategy}-{class_weight}")
    assert train(run, workspace)["state"] == "finished"
    assert read_json(run.folder / "config.json")["class_weight"] == class_weight
    results = Predictor(run).predict(load_manifest(manifest_path).files("test")[0])
    return float(np.mean([r["probabilities"]["few"] for r in results]))


@pytest.mark.parametrize("strategy", ["feature_extraction", "feature_extraction_augmented"])
def test_balanced_weights_move_predictions_towards_the_small_class(lookalike_manifest, strategy):
    manifest_path, workspace = lookalike_manifest
    plain = _share_of_few(manifest_path, workspace, strategy, "none")
    balanced = _share_of_few(manifest_path, workspace, strategy, "balanced")
    assert plain < 0.4  # the model learnt the 3:1 odds
    assert balanced > plain + 0.1
