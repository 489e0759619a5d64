"""Export: every format is written from a tiny run, loads with its own runtime and agrees with
the app; a wrong preprocessing is caught; the zip holds what it lists; the app's Export page."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from conftest import make_folder_dataset
from test_app import ROOT, TIMEOUT, assert_no_exception, button
from transfer_core import export
from transfer_core.cli import main
from transfer_core.datasets import SplitRequest, load_manifest, scan, split
from transfer_core.export import FORMATS, export_run, standard_preprocessing
from transfer_core.layers import Preprocess
from transfer_core.runs import Run, TrainConfig
from transfer_core.training import train

# VGG16 (caffe preprocessing: the channel flip is the easiest step to get wrong), no weights.
TINY = dict(backbone="vgg16", weights="none", image_size=32, learning_rate=2e-3, batch_size=4,
            strategy="feature_extraction", epochs=3)
FEW = dict(parity_images=12, representative_images=8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("export")
    colours = make_folder_dataset(root / "colours", per_class=14)
    manifest = split(scan(colours, workers=1), SplitRequest(counts=(8, 2, 4))).save(
        root / "workspace", "colours")
    run = Run.create(root / "workspace", TrainConfig(manifest=str(manifest), **TINY), "tiny")
    assert train(run, root / "workspace")["state"] == "finished"
    return run


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> dict:
    return export_run(tiny_run, FORMATS, tmp_path_factory.mktemp("out"), **FEW)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "rescale", "none"])
def test_standard_layers_preprocess_as_the_apps_layer_does(mode):
    pixels = np.random.default_rng(5).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(Preprocess(mode)(pixels.astype("float32")))
    x = keras.ops.convert_to_tensor(pixels)
    for layer in standard_preprocessing(mode):
        x = layer(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x), expected, rtol=1e-6, atol=1e-4)


def test_every_format_is_written_loads_and_agrees_with_the_app(exported):
    rows = {row["format"]: row for row in exported["parity"]}
    assert list(rows) == list(FORMATS)
    for fmt in ("keras", "savedmodel", "tflite"):
        assert rows[fmt]["agreement"] == 1.0 and rows[fmt]["images"] == 12
        assert rows[fmt]["max_abs_probability_difference"] < 1e-4, rows[fmt]
        assert rows[fmt]["accuracy"] == rows[fmt]["app_accuracy"]
    assert rows["tflite-int8"]["max_abs_probability_difference"] < 0.2
    assert "meets_target" in rows["tflite-int8"]
    assert exported["runtimes"]["tflite"] == "ai_edge_litert.interpreter.Interpreter"
    sizes = {fmt: f["bytes"] for fmt, f in exported["files"].items()}
    assert sizes["tflite-int8"] < sizes["tflite"] / 2  # 8-bit weights
    # Each weight stored once (Keras' own model.export stores it twice: keras#23553).
    assert sizes["savedmodel"] < 1.2 * sizes["tflite"]


def test_the_zip_holds_what_it_lists_and_a_user_can_read_it(exported, tiny_run, tmp_path):
    with zipfile.ZipFile(exported["zip"]) as archive:
        names = archive.namelist()
        assert names == exported["contents"]
        archive.extractall(tmp_path)
    for fmt, entry in exported["files"].items():
        assert (tmp_path / entry["path"]).exists(), fmt
    assert {"labels.txt", "README.md", "model_card.json", "parity.json"} <= set(names)
    assert (tmp_path / "labels.txt").read_text().split() == ["blue", "green", "red"]
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["backbone"] == "vgg16" and card["input"]["shape"] == [1, 32, 32, 3]
    assert card["preprocessing"]["mode"] == "caffe" and card["int8_representative_images"] == 8
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert [row["format"] for row in parity["rows"]] == list(FORMATS)
    readme = (tmp_path / "README.md").read_text()
    assert all(f"`{entry['path']}`" in readme for entry in exported["files"].values())
    assert "Image.BILINEAR" in readme and "exif_transpose" in readme
    # The Keras file needs no Transfer Lab code (only Keras' own layers in its config) and
    # holds no optimizer state (the run's model.keras keeps RMSprop's slots for the head).
    with zipfile.ZipFile(tmp_path / "model.keras") as keras_zip:
        assert "transfer_core" not in keras_zip.read("config.json").decode()
        weights = h5py.File(io.BytesIO(keras_zip.read("model.weights.h5")), "r")
        names = []
        weights.visit(names.append)
        assert names and not [name for name in names if "optimizer" in name]


@pytest.fixture(scope="module")
def unzipped(exported, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(exported["zip"]) as archive:
        archive.extractall(folder)
    return folder


@pytest.mark.parametrize("fmt", FORMATS)
def test_readme_snippet_classifies_a_photo_as_the_app_does(fmt, exported, unzipped, tiny_run):
    from transfer_core.predict import Predictor

    readme = (unzipped / "README.md").read_text()
    code = readme.split(f"## {fmt}:")[1].split("```python\n")[1].split("```")[0]
    photo = Path(load_manifest(tiny_run.config.manifest).files("test")[0][0])
    (unzipped / "photo.jpg").write_bytes(photo.read_bytes())  # the snippets' file name
    printed = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(unzipped)
        exec(code, {"print": lambda *args: printed.append(args)})  # noqa: S102
    label, probs = printed[0]
    expected = Predictor(tiny_run).predict([photo])[0]
    assert sum(probs) == pytest.approx(1.0, abs=0.02 if fmt == "tflite-int8" else 1e-5)
    if fmt != "tflite-int8":  # 8 bits: parity.json reports how often it agrees
        assert label == expected["label"]
        np.testing.assert_allclose(probs, list(expected["probabilities"].values()), atol=1e-5)


def test_an_export_that_skips_the_preprocessing_fails_with_one_line(
        tiny_run, tmp_path, monkeypatch, capsys):
    def skipped(mode):  # pixels go into the base as 0..255 RGB, not BGR minus the mean
        return [keras.layers.Rescaling(1.0)]

    monkeypatch.setattr(export, "standard_preprocessing", skipped)
    code = main(["export", str(tiny_run.folder), "--formats", "keras", "--out", str(tmp_path),
                 "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: The keras export labels ") and "unlike the app" in err[-1]
    assert "largest probability difference" in err[-1]
    assert not list(tmp_path.glob("*.zip"))  # nothing half-done is delivered


def test_cli_exports_chosen_formats_as_json(tiny_run, tmp_path, capsys):
    code = main(["export", str(tiny_run.folder), "--formats", "keras,keras", "--out",
                 str(tmp_path), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["format"] for row in result["parity"]] == ["keras"]
    assert result["parity"][0]["agreement"] == 1.0
    assert Path(result["zip"]) == tmp_path / "tiny-export.zip" and Path(result["zip"]).is_file()


def test_cli_names_an_unknown_format(tiny_run, capsys):
    assert main(["export", str(tiny_run.folder), "--formats", "onnx"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: `formats` must be some of keras, savedmodel, tflite, tflite-int8 "
        "(comma-separated). Received: 'onnx'")


def test_export_page_exports_shows_parity_and_offers_the_zip(tiny_run, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TRANSFER_LAB_WORKSPACE", str(tiny_run.folder.parent.parent))
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/export.py").run()
    at.multiselect(key="export_formats").set_value(["keras"]).run()
    button(at, "Export").click().run()
    assert_no_exception(at)
    table = at.dataframe[0].value
    assert list(table["format"]) == ["Keras (.keras)"]
    assert list(table["label agreement"]) == ["100.0%"]
    downloads = at.download_button
    assert len(downloads) == 1 and "tiny-export.zip" in downloads[0].label


def test_export_page_on_a_fresh_workspace_links_to_train(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TRANSFER_LAB_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/export.py").run()
    assert_no_exception(at)
    assert at.title[0].value == "Export"
    assert "No finished run with a saved model yet." in [info.value for info in at.main.info]
    assert not at.main.button and not at.download_button


def test_a_converter_failure_is_one_line_naming_the_format(tiny_run, tmp_path, monkeypatch):
    class Broken:
        def convert(self):
            raise RuntimeError("op FOO is neither a custom op nor a flex op\nmore detail")

    monkeypatch.setattr(export, "_converter", lambda model, context: Broken())
    with pytest.raises(export.ExportError) as caught:
        export_run(tiny_run, ["keras", "tflite"], tmp_path, **FEW)
    assert str(caught.value) == (
        "The TFLite converter could not make the tflite file (op FOO is neither a custom op nor "
        "a flex op): export the other formats.")
    assert not list(tmp_path.glob("*.zip"))


def test_the_card_carries_the_test_accuracy_with_its_interval_once_evaluated(
        exported, tiny_run):
    from transfer_core.evaluation import evaluate

    assert exported["test_accuracy"] is None  # exported before any evaluation
    assert "Test accuracy: not evaluated yet" in export.readme(exported)
    result = evaluate(tiny_run)
    accuracy = export.held_out_accuracy(tiny_run)
    low, high = accuracy["interval_95"]
    assert accuracy["images"] == result["images"] == 12
    assert accuracy["accuracy"] == result["accuracy"]
    assert low < result["accuracy"] <= high and high - low > 0.1  # 12 photos: a wide interval
    text = export.readme({**exported, "test_accuracy": accuracy})
    assert f"Test accuracy: {100 * result['accuracy']:.1f}% of 12 test photos (95% Wilson" in text
