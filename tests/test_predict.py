"""Prediction with a run's saved model: it matches the model that trained, and it takes photos
of any size and format, from paths or bytes, one bad file not spoiling the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS, colour_image
from test_training import FAST, trained_runs
from transfer_core.predict import Predictor, load_model, probabilities
from transfer_core.runs import TrainConfig
from transfer_core.storage import save_model_atomic
from transfer_core.strategies import (build_base_for, build_full_model, build_head, freeze_base,
                                      inference_model)

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor(trained_runs(tmp_path_factory)["runs"]["fine_tune"])


def _jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, **options)
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_saved_model_predicts_what_the_trained_model_predicted(tmp_path):
    config = TrainConfig(manifest="unused.json", classes=["a", "b", "c"],
                         strategy="feature_extraction_augmented", **FAST)
    base = build_base_for(config)
    head = build_head(base.output.shape[1:], 3, config)
    model = build_full_model(base, head, config, augment=True)  # as trained
    freeze_base(base)
    path = tmp_path / "model.keras"
    save_model_atomic(inference_model(base, head, config), path)  # as a run saves it
    loaded = load_model(path)  # safe_mode=True: no arbitrary code from the file
    rng = np.random.default_rng(3)
    for shape in [(5, 32, 32, 3), (2, 57, 41, 3)]:
        images = rng.uniform(0, 255, shape).astype("float32")
        expected = probabilities(model, images)
        np.testing.assert_allclose(probabilities(loaded, images), expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _check(result, classes):
    assert set(result) == {"label", "confidence", "probabilities", "out_of_distribution",
                           "ood_score", "ood_threshold"}, result
    probs = result["probabilities"]
    assert list(probs) == classes
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(probs, key=probs.get)
    assert result["confidence"] == probs[result["label"]]


def test_predicts_paths_and_bytes_of_any_size_and_format(predictor, tmp_path):
    red_png = tmp_path / "red.png"
    colour_image(COLOURS["red"], 64, seed=11).save(red_png)
    green_jpg = tmp_path / "green photo.JPG"
    colour_image(COLOURS["green"], 32, seed=12).resize((300, 200)).save(green_jpg, quality=90)
    blue = colour_image(COLOURS["blue"], 32, seed=13).resize((18, 25))
    rgba = colour_image(COLOURS["blue"], 48, seed=14).convert("RGBA")
    rgba.putalpha(200)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo at all")
    sources = [red_png, _jpeg(blue), notes, str(green_jpg), _png(rgba), b"%PDF-1.4 text",
               red_png.read_bytes()]
    results = predictor.predict(sources)
    assert len(results) == len(sources)
    for index in (0, 1, 3, 4, 6):
        _check(results[index], predictor.classes)
    assert set(results[2]) == {"error"} and "notes.jpg" in results[2]["error"]
    assert set(results[5]) == {"error"} and "is in PDF format" in results[5]["error"]
    # A path and its bytes are the same photo.
    assert results[6]["probabilities"] == pytest.approx(results[0]["probabilities"], abs=1e-6)
    # The same images alone: a bad neighbour changed nothing.
    alone = predictor.predict([red_png, str(green_jpg)])
    assert alone[0]["probabilities"] == pytest.approx(results[0]["probabilities"], abs=1e-6)
    assert alone[1]["probabilities"] == pytest.approx(results[3]["probabilities"], abs=1e-6)


def test_a_well_trained_model_names_the_colours(predictor):
    photos = {name: [_jpeg(colour_image(rgb, 32, seed=500 + i).resize((120, 90)))
                     for i in range(3)] for name, rgb in COLOURS.items()}
    sources = [photo for name in predictor.classes for photo in photos[name]]
    labels = [r["label"] for r in predictor.predict(sources)]
    expected = [name for name in predictor.classes for _ in range(3)]
    assert sum(a == b for a, b in zip(labels, expected)) >= 7, labels


def test_exif_orientation_is_applied_before_predicting(predictor, tmp_path):
    # A landscape picture stored sideways, with the EXIF tag that tells viewers to rotate it.
    upright = Image.fromarray(np.linspace(0, 255, 80 * 50 * 3).reshape(50, 80, 3).astype("uint8"))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    tagged = _jpeg(stored, exif=exif.tobytes())
    untagged = _jpeg(stored)
    # What a viewer shows: the stored pixels (decoded exactly as the JPEG holds them) turned.
    shown = np.rot90(np.asarray(Image.open(io.BytesIO(untagged)).convert("RGB")), k=-1)
    assert shown.shape == (50, 80, 3)
    shown_png = tmp_path / "shown.png"
    Image.fromarray(np.ascontiguousarray(shown)).save(shown_png)
    result, as_shown, sideways = predictor.predict([tagged, shown_png, untagged])
    assert result["probabilities"] == pytest.approx(as_shown["probabilities"], abs=1e-6)
    assert result["probabilities"] != pytest.approx(sideways["probabilities"], abs=1e-6)


def test_a_large_photo_gets_the_input_training_and_the_export_give_it(predictor, tmp_path):
    """Training and Evaluate decode a large JPEG at a reduced scale (draft mode); Predict, the
    Grad-CAM views and the export's README snippet must feed the model those same pixels, or a
    photo would score differently on each page."""
    from transfer_core.export import load_photo
    from transfer_core.images import load_array

    rng = np.random.default_rng(3)
    big = Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8))
    path = tmp_path / "phone photo.jpg"
    path.write_bytes(_jpeg(big))
    size = predictor.image_size
    trained_on = load_array(path, (size, size))
    full_decode = np.asarray(Image.open(path).convert("RGB").resize((size, size),
                                                                     Image.BILINEAR))
    assert not np.array_equal(trained_on, full_decode)  # the two decoders differ
    np.testing.assert_array_equal(predictor.model_input(path), trained_on)
    np.testing.assert_array_equal(predictor.model_input(path.read_bytes()), trained_on)
    np.testing.assert_array_equal(predictor.photo_and_input(str(path))[1], trained_on)
    np.testing.assert_array_equal(load_photo(path, size), trained_on)
    assert predictor.photo_and_input(path)[0].size == (1200, 900)  # shown at full size
    # Any other format is decoded once: the shown photo, resized, is training's input.
    png = tmp_path / "screenshot.png"
    big.save(png)
    photo, array = predictor.photo_and_input(png)
    assert photo.size == (1200, 900)
    np.testing.assert_array_equal(array, load_array(png, (size, size)))
