"""bfloat16 for the conv base: "auto" on a CPU without it, the record and the cache key, and a
bfloat16 extraction that gives the same decisions with a float32 head."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_folder_dataset
from transfer_core import precision
from transfer_core.datasets import SplitRequest, load_manifest, scan, split
from transfer_core.errors import RunError
from transfer_core.features import FeatureCache, FeatureSpec, build_extractor
from transfer_core.runs import Run, TrainConfig
from transfer_core.training import feature_spec, train

CHECK = (["a.jpg", "b.jpg"], [0, 1])


def _no_measuring(*args, **kwargs):
    raise AssertionError("auto measured where it needs not")


def test_auto_picks_float32_without_bf16_and_without_measuring(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "fma"})
    monkeypatch.setattr(precision, "compare", _no_measuring)
    chosen = precision.resolve("auto", "mobilenet_v2", "imagenet", 160, CHECK, tmp_path)
    assert chosen["precision"] == "float32"
    assert "no native bfloat16" in chosen["reason"]
    assert precision.resolve("bfloat16", "vgg16", "imagenet", 150)["precision"] == "bfloat16"


def test_auto_measures_once_with_bf16_and_remembers(monkeypatch, tmp_path):
    calls = []

    def measured(*args):
        calls.append(args)
        return {"precision": "bfloat16", "reason": "1.90× faster, same predictions"}

    monkeypatch.setattr(precision, "compare", measured)
    flags = {"avx512f", "avx512_bf16"}
    for _ in range(2):
        chosen = precision.resolve("auto", "vgg16", "imagenet", 150, CHECK, tmp_path, flags)
        assert chosen["precision"] == "bfloat16" and chosen["asked"] == "auto"
    assert len(calls) == 1  # the second run read the workspace's record


def test_auto_refuses_bf16_that_changes_predictions(monkeypatch):
    labels = np.array([0, 1] * 32)
    reference = np.stack([np.full(4, float(label)) for label in labels])
    flipped = reference[::-1].copy()  # every decision changes
    monkeypatch.setattr(precision, "_features", lambda b, w, s, paths, p: (
        reference if p == "float32" else flipped, 10.0 if p == "float32" else 20.0))
    chosen = precision.compare("vgg16", "imagenet", 150, ([""] * 64, labels.tolist()))
    assert chosen["precision"] == "float32" and chosen["agreement"] == 0.0
    assert "changed predictions" in chosen["reason"]


def test_a_bad_precision_is_named():
    with pytest.raises(RunError, match="precision"):
        TrainConfig(manifest="m.json", precision="float16")


def test_float32_and_bf16_do_not_share_a_cache_entry(tmp_path):
    paths, labels = [], []
    cache = FeatureCache(tmp_path)
    f32 = cache.key(paths, labels, FeatureSpec("vgg16", "none", 32))
    bf16 = cache.key(paths, labels, FeatureSpec("vgg16", "none", 32, precision="bfloat16"))
    assert f32 != bf16
    assert FeatureSpec(precision="bfloat16").cache_identity()["precision"] == "bfloat16"


def test_bf16_features_give_the_same_decisions_and_the_head_stays_float32(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype="uint8")
    f32 = build_extractor(FeatureSpec("vgg16", "none", 32)).predict_on_batch(images)
    extractor = build_extractor(FeatureSpec("vgg16", "none", 32, precision="bfloat16"))
    bf16 = extractor.predict_on_batch(images)
    assert bf16.dtype == np.float32  # stored as float32 whatever the base computed in
    assert extractor.get_layer("vgg16").dtype_policy.name == "mixed_bfloat16"
    assert np.abs(bf16 - f32).max() > 0  # it did compute in bfloat16
    # A tiny model's decisions: the nearest class mean over the float32 features.
    labels = np.arange(16) % 2
    assert precision.prediction_agreement(f32, bf16, labels)["agreement"] == 1.0


def test_a_run_records_its_precision_and_keeps_the_head_float32(tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("TRANSFER_LAB_WORKSPACE", str(tmp_path / "ws"))
    root = make_folder_dataset(tmp_path / "data", per_class=6)
    path = split(scan(root, workers=1), SplitRequest(counts=(3, 2, 1))).save(tmp_path / "ws", "m")
    manifest = load_manifest(path)
    config = TrainConfig(manifest=str(path), backbone="vgg16", weights="none",
                         strategy="feature_extraction", epochs=1, batch_size=4, image_size=32,
                         precision="bfloat16", classes=manifest.classes)
    run = Run.create(tmp_path / "ws", config)
    status = train(run, tmp_path / "ws")
    assert status["state"] == "finished", status.get("error")
    assert status["precision"]["precision"] == "bfloat16"
    assert Run(run.folder).config.precision == "bfloat16"
    model = keras.saving.load_model(run.model_path)
    # Evaluation and prediction load this model: its base computes in bfloat16 there too.
    assert model.get_layer("vgg16").get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert {w.dtype for w in model.get_layer("head").weights} == {"float32"}
    key = FeatureCache(tmp_path / "ws").key(*manifest.files("train"),
                                            feature_spec(config, precision="bfloat16"))
    assert (tmp_path / "ws" / "cache" / "features" / key).is_dir()


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bf16")
    root = make_folder_dataset(tmp / "data", per_class=8)
    path = split(scan(root, workers=1), SplitRequest(counts=(4, 2, 2))).save(tmp / "ws", "m")
    config = TrainConfig(manifest=str(path), backbone="vgg16", weights="none", epochs=1,
                         batch_size=4, image_size=32, learning_rate=2e-3, precision="bfloat16")
    run = Run.create(tmp / "ws", config)
    assert train(run, tmp / "ws")["state"] == "finished"
    return run


def test_a_bfloat16_model_exports_to_every_format_in_float32(bf16_run, tmp_path):
    """TFLite has no bfloat16 convolutions: the export computes in float32, and its parity
    reference is the same model in float32."""
    from transfer_core.export import export_run

    result = export_run(bf16_run, ["keras", "tflite"], tmp_path)
    assert [row["format"] for row in result["parity"]] == ["keras", "tflite"]
    assert all(row["agreement"] == 1.0 for row in result["parity"])


def test_a_cpu_without_bfloat16_loads_the_model_in_float32(bf16_run, monkeypatch):
    from transfer_core import predict

    with_bf16 = predict.load_run_model(bf16_run)
    assert precision.computes_in_bfloat16(with_bf16)
    monkeypatch.setattr(predict, "cpu_has_bf16", lambda: False)
    without = predict.load_run_model(bf16_run)
    assert not precision.computes_in_bfloat16(without)
    photos = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    assert np.abs(with_bf16.predict(photos, verbose=0)
                  - without.predict(photos, verbose=0)).max() < 0.02
