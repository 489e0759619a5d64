"""Grad-CAM and the "none of these" check on the runs of test_training (VGG16, random weights,
32 px colour classes): heatmaps for every strategy, overlays on disk from the CLI, and photos
of a colour the run never saw flagged while its own kind pass."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS, colour_image
from test_training import trained_runs
from transfer_core import ood
from transfer_core.backbones import BACKBONES, build_base
from transfer_core.cli import main
from transfer_core.explain import GRADCAM_LAYERS, Explainer, colorize, overlay
from transfer_core.predict import Predictor


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_runs(tmp_path_factory)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbone_names_its_last_convolutional_map(name):
    base = build_base(name, "none", 64)
    layer = base.get_layer(GRADCAM_LAYERS[name])
    assert len(layer.output.shape) == 4
    # Nothing after it but pooling and activations: no later map holds more convolutions.
    after = base.layers[base.layers.index(layer) + 1:]
    assert not [l.name for l in after if "conv" in type(l).__name__.lower()]


@pytest.mark.parametrize("strategy", ["feature_extraction", "feature_extraction_augmented",
                                      "fine_tune"])
def test_heatmaps_for_every_strategy_agree_with_the_prediction(trained, strategy):
    predictor = Predictor(trained["runs"][strategy], ood=False)
    photos = [colour_image(COLOURS[c], 32, seed=500 + i) for i, c in enumerate(COLOURS)]
    arrays = np.stack([predictor.photo_and_input(p)[1] for p in photos])
    probs, maps = predictor.explainer().heatmaps(arrays)
    expected = [r["probabilities"] for r in predictor.predict(photos)]
    np.testing.assert_allclose(probs, [list(p.values()) for p in expected], atol=1e-4)
    assert maps.shape == (3, 2, 2) and maps.min() >= 0 and maps.max() <= 1
    # One map per class: asking for another class changes the map of some photo.
    _, other = predictor.explainer().heatmaps(arrays, (probs.argmax(axis=1) + 1) % 3)
    assert not np.allclose(maps, other)


def test_overlay_keeps_the_photo_size_and_blends_by_opacity():
    photo = Image.new("RGB", (40, 30), (10, 200, 10))
    heat = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert overlay(photo, heat, 0.0).tobytes() == photo.tobytes()
    full = np.asarray(overlay(photo, heat, 1.0))
    assert full.shape == (30, 40, 3)
    assert tuple(full[0, 39]) == tuple(colorize(np.array(1.0))[()])  # hot corner: top right
    red, _, blue = full[29, 0].astype(int)
    assert blue > red  # cold corner: bottom left
    with pytest.raises(ValueError, match="opacity"):
        overlay(photo, heat, 1.5)


def test_cli_explain_writes_an_overlay_per_image(trained, tmp_path, capsys):
    run = trained["runs"]["fine_tune"]
    red = tmp_path / "red.jpg"
    colour_image(COLOURS["red"], 80, seed=7).save(red)
    bad = tmp_path / "bad.jpg"
    bad.write_text("no photo")
    code = main(["explain", str(run.folder), str(red), str(bad), "--out",
                 str(tmp_path / "out"), "--json"])
    assert code == 0
    good, broken = json.loads(capsys.readouterr().out)["explanations"]
    assert good["label"] == Predictor(run, ood=False).predict([red])[0]["label"]
    with Image.open(good["heatmap"]) as png:
        assert png.format == "PNG" and png.size == (80, 80)
    assert "error" in broken


# --- "none of these" -------------------------------------------------------------------------

def test_score_and_threshold_on_synthetic_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (2, 100))
    def draw(n, shift=0.0):
        labels = rng.integers(0, 2, n)
        return centres[labels] + shift + rng.normal(0, 1, (n, 100)), labels
    train, labels = draw(400)
    validation, _ = draw(400)
    stats = ood.fit(train, labels, validation, components=16)
    test, _ = draw(1000)
    outside, _ = draw(300, shift=rng.normal(0, 1.5, 100))
    assert 0.02 <= stats.flags(test)[1].mean() <= 0.09  # ~5%: the 95th percentile
    assert stats.flags(outside)[1].mean() >= 0.95


def test_a_colour_the_run_never_saw_is_flagged(trained):
    run = trained["binary"]  # red against blue
    ood.stats_path(run).unlink(missing_ok=True)
    predictor = Predictor(run)
    predictor.prepare_ood()
    assert predictor.ood_problem is None and ood.stats_path(run).exists()
    own = [colour_image(COLOURS[c], 32, seed=700 + i) for c in ("red", "blue") for i in range(10)]
    green = [colour_image(COLOURS["green"], 32, seed=800 + i) for i in range(20)]
    results = predictor.predict(own + green)
    flagged = [r["out_of_distribution"] for r in results]
    assert sum(flagged[:20]) <= 3 and sum(flagged[20:]) >= 18
    assert all(r["ood_score"] > r["ood_threshold"] for r in results[20:] if
               r["out_of_distribution"])
    assert set(results[0]["probabilities"]) == {"blue", "red"}  # still there when flagged


def test_damaged_statistics_are_computed_again(trained):
    run = trained["binary"]
    Predictor(run).prepare_ood()
    ood.stats_path(run).write_bytes(b"PK\x03\x04 half a file")
    with pytest.warns(UserWarning, match="damaged"):
        predictor = Predictor(run)
    predictor.prepare_ood()
    assert predictor.ood_stats is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ood.load_stats(run) is not None  # the file is whole again


def test_cli_predict_reports_out_of_distribution(trained, tmp_path, capsys):
    green = tmp_path / "green.png"
    colour_image(COLOURS["green"], 32, seed=901).save(green)
    assert main(["predict", str(trained["binary"].folder), str(green), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["predictions"]
    assert result["out_of_distribution"] is True and result["ood_score"] > 0
