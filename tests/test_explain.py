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
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.explain import GRADCAM_LAYERS, colorize, overlay
from transfer_core.predict import Predictor
from transfer_core.runs import Run, TrainConfig
from transfer_core.training import train


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
    assert not [layer.name for layer in after if "conv" in type(layer).__name__.lower()]


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
    centres = rng.normal(0, 1, (3, 100))  # two known classes and one the training never saw
    def draw(n, classes=(0, 1)):
        return centres[rng.choice(classes, n)] + rng.normal(0, 0.3, (n, 100))
    stats = ood.fit(draw(400), draw(400))
    assert 0.005 <= stats.flags(draw(2000))[1].mean() <= 0.05  # ~2.5%: the 97.5th percentile
    assert stats.flags(draw(300, classes=(2,)))[1].mean() >= 0.95
    # Scores compare directions: a brighter copy of a photo is the same photo.
    test = draw(50)
    np.testing.assert_allclose(stats.scores(3 * test), stats.scores(test), atol=1e-3)


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


# --- where the evidence lies -----------------------------------------------------------------

MARK_SIZE = 128  # VGG16's block5_conv3 is then 8×8: a quadrant is 4×4 cells of the map


def marked_photo(seed: int, corner: str | None) -> Image.Image:
    """Grey noise; with `corner` ("top_left" or "bottom_right"), a saturated red square a
    quarter of the side wide near that corner (within 12 px of it: a square by the middle
    spreads its map over every quadrant, block5's cells seeing most of the photo)."""
    rng = np.random.default_rng(seed)
    size, side = MARK_SIZE, MARK_SIZE // 4
    pixels = np.clip(rng.normal(128, 10, (size, size, 1)).repeat(3, axis=2), 0, 255)
    if corner:
        x, y = rng.integers(0, 12, 2)
        if corner == "bottom_right":
            x, y = size - side - x, size - side - y
        pixels[y:y + side, x:x + side] = (230, 20, 20)
    return Image.fromarray(pixels.astype("uint8"))


@pytest.fixture(scope="module")
def mark_run(tmp_path_factory):
    """A run that tells photos with a red mark (always top left) from plain ones: the
    presence of a colour, which a frozen random base picks up. Average pooling: the chapter's
    Flatten head learns the mark's place, and its Grad-CAM showed the noise around it."""
    root = tmp_path_factory.mktemp("marks")
    for name, corner in (("marked", "top_left"), ("plain", None)):
        (root / "photos" / name).mkdir(parents=True)
        for i in range(22):
            marked_photo(100 * len(name) + i, corner).save(root / "photos" / name / f"{i}.png")
    workspace = root / "workspace"
    manifest = split(scan(root / "photos", workers=1), SplitRequest(counts=(16, 3, 3))).save(
        workspace, "marks")
    run = Run.create(workspace, TrainConfig(manifest=str(manifest), backbone="vgg16",
                                            weights="none", image_size=MARK_SIZE, pooling="avg",
                                            epochs=30, learning_rate=1e-2, batch_size=8))
    train(run, workspace)
    return run


def _top_left_share(predictor, corner: str) -> np.ndarray:
    """Per photo, the share of the "marked" heatmap's mass in the top-left quadrant."""
    photos = [marked_photo(9000 + i, corner) for i in range(8)]
    explainer = predictor.explainer()
    probs, maps = explainer.heatmaps(np.stack([predictor.photo_and_input(p)[1] for p in photos]),
                                     explainer.class_index("marked"))
    assert maps.shape[1:] == (8, 8)
    if corner == "top_left":  # where it was trained: the model sees the mark
        assert (probs[:, explainer.class_index("marked")] > 0.5).all()
    half = maps.shape[1] // 2
    return maps[:, :half, :half].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))


def test_heatmap_mass_lies_where_the_mark_is(mark_run):
    predictor = Predictor(mark_run, ood=False)
    # By chance a quadrant holds 25% of the mass; measured: a median of 52%.
    assert np.median(_top_left_share(predictor, "top_left")) > 0.4
    # The map follows the mark, not the place it was trained at.
    assert np.median(_top_left_share(predictor, "bottom_right")) < 0.1
