"""The registry of conv bases: what each one is, its preprocessing, its cost, and the errors a
user sees when weights cannot be had. Random weights and small inputs keep it fast and offline."""

from __future__ import annotations

import socket
from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.applications import vgg16 as keras_vgg16
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

from transfer_core.backbones import (BACKBONES, build_base, flops_per_image, get_backbone,
                                     preprocess_mode)
from transfer_core.cli import main
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.errors import BackboneError
from transfer_core.layers import Preprocess

VGG16_NO_TOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


def test_the_registry_offers_the_chapters_base_and_the_cpu_friendly_ones():
    assert {"vgg16", "mobilenet_v2", "efficientnet_b0", "resnet50_v2"} <= set(BACKBONES)
    for name, backbone in BACKBONES.items():
        assert backbone.name == name
        assert hasattr(keras.applications, backbone.constructor)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fine_tuning_starts_at_a_layer_in_the_top_of_the_base(name):
    base = build_base(name, "none", 32)
    names = [layer.name for layer in base.layers]
    assert BACKBONES[name].fine_tune_from in names
    # Fine-tuning retrains the last block(s) only, as the chapter's block5_conv1 does.
    assert names.index(BACKBONES[name].fine_tune_from) > len(names) // 2


def test_an_unknown_backbone_names_the_choices():
    with pytest.raises(BackboneError) as info:
        build_base("vgg19", "none", 32)
    for name in BACKBONES:
        assert name in str(info.value)


def test_a_missing_weights_file_is_a_backbone_error(tmp_path):
    missing = tmp_path / "my-vgg16.weights.h5"
    # Says the file is missing (not a puzzling load error from Keras) and names it.
    with pytest.raises(BackboneError, match=r"no weights file .*my-vgg16\.weights\.h5"):
        build_base("vgg16", str(missing), 32)


def test_an_image_size_below_32_pixels_is_refused():
    with pytest.raises(BackboneError, match="at least 32"):
        build_base("mobilenet_v2", "none", 16)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: nothing listens there


@pytest.fixture
def offline_keras(tmp_path, monkeypatch):
    """KERAS_HOME at an empty folder and VGG16's weights URL at a closed local port, so Keras'
    own download code fails as it does without a network, touching nothing outside."""
    home = tmp_path / "keras-home"
    home.mkdir()
    _point_keras_home(monkeypatch, home)
    monkeypatch.setattr(keras_vgg16, "WEIGHTS_PATH_NO_TOP",
                        f"http://127.0.0.1:{_closed_port()}/{VGG16_NO_TOP}")
    downloads = []
    real_urlretrieve = file_utils.urlretrieve

    def recording_urlretrieve(url, target, *args, **kwargs):
        assert url.startswith("http://127.0.0.1:"), url  # never the real network
        downloads.append(Path(target))
        return real_urlretrieve(url, target, *args, **kwargs)

    monkeypatch.setattr(file_utils, "urlretrieve", recording_urlretrieve)
    return home, downloads


def _point_keras_home(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(home))
    # Keras reads KERAS_HOME once, at import: set what it would have read.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))


def test_offline_imagenet_weights_say_which_file_to_place_where(offline_keras):
    home, downloads = offline_keras
    with pytest.raises(BackboneError) as info:
        build_base("vgg16", "imagenet", 32)
    message = str(info.value)
    expected = home / "models" / VGG16_NO_TOP
    assert downloads == [expected]  # Keras really tried, and saves exactly there
    assert str(expected) in message
    assert "weights 'none'" in message
    assert info.value.__suppress_context__  # no chained "during handling…" traceback


def test_offline_imagenet_weights_are_one_error_line_in_the_cli(offline_keras, folder_dataset,
                                                                workspace, capsys):
    manifest = split(scan(folder_dataset), SplitRequest(counts=(1, 0, 0))).save(workspace)
    code = main(["extract", "--data", str(manifest), "--backbone", "vgg16",
                 "--weights", "imagenet", "--image-size", "32"])
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1
    assert len(error_lines) == 1 and VGG16_NO_TOP in error_lines[0]
    assert "Traceback" not in err


def test_an_unwritable_keras_home_names_the_folder_keras_really_uses(offline_keras, tmp_path,
                                                                     monkeypatch):
    # Keras silently downloads to /tmp/.keras when KERAS_HOME is not writable; the message
    # must send the user there, not to a folder Keras ignores.
    (tmp_path / "a-file").write_text("")
    _point_keras_home(monkeypatch, tmp_path / "a-file" / "keras")  # cannot be created
    fallback = Path("/tmp/.keras/models") / VGG16_NO_TOP
    if fallback.exists() or (fallback.parent.exists()
                             and not (fallback.parent.stat().st_mode & 0o200)):
        pytest.skip(f"{fallback} exists or is not ours: Keras would not download")
    _, downloads = offline_keras
    with pytest.raises(BackboneError) as info:
        build_base("vgg16", "imagenet", 32)
    assert len(downloads) == 1
    assert str(downloads[0]) in str(info.value)


def test_flops_grow_with_the_pixels_and_match_published_figures():
    vgg_112 = flops_per_image(build_base("vgg16", "none", 112))
    vgg_224 = flops_per_image(build_base("vgg16", "none", 224))
    assert vgg_224 / vgg_112 == pytest.approx(4.0, rel=0.05)
    assert 29e9 <= vgg_224 <= 32e9  # VGG16's conv layers: ≈15.5 G multiply-adds at 224
    # MobileNetV2 1.0/224: ≈300 M multiply-adds (Sandler et al. 2018); its depthwise
    # convolutions are 7% of them, so this fails if they are left out.
    assert 0.58e9 <= flops_per_image(build_base("mobilenet_v2", "none", 224)) <= 0.62e9


@pytest.mark.parametrize("name, family", [
    ("vgg16", keras.applications.vgg16),  # caffe: RGB→BGR, minus the ImageNet mean
    ("mobilenet_v2", keras.applications.mobilenet_v2),  # tf: −1..1
    ("resnet50_v2", keras.applications.resnet_v2),  # tf: −1..1
    ("efficientnet_b0", keras.applications.efficientnet),  # rescales inside the model
])
def test_the_preprocess_layer_matches_the_familys_preprocess_input(name, family):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    layer = Preprocess(preprocess_mode(get_backbone(name), "backbone"))
    got = keras.ops.convert_to_numpy(layer(pixels))
    np.testing.assert_allclose(got, family.preprocess_input(pixels.copy()), atol=1e-4)


def test_rescale_is_the_chapters_divide_by_255():
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    mode = preprocess_mode(get_backbone("vgg16"), "rescale")
    got = keras.ops.convert_to_numpy(Preprocess(mode)(pixels))
    np.testing.assert_allclose(got, pixels / 255.0, rtol=1e-6)
    with pytest.raises(BackboneError, match="preprocessing"):
        preprocess_mode(get_backbone("vgg16"), "imagenet")


def test_the_preprocess_layer_survives_save_and_safe_load(tmp_path):
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    model = keras.Model(inputs, Preprocess("caffe", name="preprocess")(inputs))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("preprocess"), Preprocess)
    assert loaded.get_layer("preprocess").mode == "caffe"
    images = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0))


def test_the_train_page_warns_when_the_size_is_far_from_the_weights_training_size():
    from transfer_core.backbones import size_advice

    fact, warning = size_advice("vgg16", 150)  # the chapter's size: 0.67× of 224, no warning
    assert "224×224" in fact and warning is None
    assert "more than 2×" in size_advice("vgg16", 96)[1]  # 0.43×
    assert "more than 2×" in size_advice("resnet50_v2", 512)[1]
    # MobileNetV2 has weights per size: at 96 px they were trained at 96, so 96 is fine
    fact, warning = size_advice("mobilenet_v2", 96)
    assert "96×96" in fact and warning is None
    assert "224×224" in size_advice("mobilenet_v2", 100)[0]  # no 100 px weights: 224's load
    assert "below the 32 px" in size_advice("efficientnet_b0", 24)[1]
