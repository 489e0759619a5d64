"""The view bank and the frozen-prefix cache compute what the full model computes.

A frozen layer is a fixed function, so features cached below the fine-tuning boundary and run
through the top of the base and the head must give the full model's output (float32, 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_folder_dataset
from transfer_core.augment import augmentation_layers
from transfer_core.backbones import describe
from transfer_core.datasets import SplitRequest, load_manifest, scan, split
from transfer_core.evaluation import evaluate
from transfer_core.features import (FeatureCache, FeatureSpec, build_extractor,
                                     view_bank_bytes)
from transfer_core.runs import Run, TrainConfig
from transfer_core.storage import read_json
from transfer_core.strategies import (build_base_for, build_head, cached_trainer, freeze_base,
                                      inference_model, layer_below, unfreeze_from)
from transfer_core.training import ViewBank, train


def _augmented_batch(size=32, count=6, seed=3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (count, size, size, 3)).astype("float32")
    augment = augmentation_layers(seed=seed)
    return np.asarray(augment(images, training=True))


@pytest.mark.parametrize("backbone", ["vgg16", "mobilenet_v2"])
def test_cached_prefix_path_equals_the_full_model(backbone, tmp_path):
    config = TrainConfig(manifest="unused.json", backbone=backbone, weights="none",
                         strategy="fine_tune", image_size=32, classes=["a", "b", "c"])
    base = build_base_for(config)
    head = build_head(base.output.shape[1:], 3, config)
    full = inference_model(base, head, config)
    cut = layer_below(base, config.fine_tune_from)
    trainer = cached_trainer(base, head, config.fine_tune_from)
    extractor = build_extractor(FeatureSpec(backbone, "none", 32, seed=config.seed, layer=cut))
    unfreeze_from(base, config.fine_tune_from)  # unfrozen top: BatchNorm still inference mode
    batch = _augmented_batch()
    expected = np.asarray(full(batch, training=False))
    cached = np.asarray(trainer(np.asarray(extractor(batch, training=False)), training=False))
    assert np.abs(expected - cached).max() < 1e-5
    # and the cut is where the issue says: VGG16's last frozen layer is block4_pool
    if backbone == "vgg16":
        assert cut == "block4_pool"


def test_head_only_path_equals_the_full_model():
    config = TrainConfig(manifest="unused.json", backbone="vgg16", weights="none",
                         strategy="feature_extraction_augmented", image_size=32,
                         classes=["a", "b"])
    base = build_base_for(config)
    freeze_base(base)
    head = build_head(base.output.shape[1:], 2, config)
    full = inference_model(base, head, config)
    extractor = build_extractor(FeatureSpec("vgg16", "none", 32, seed=config.seed))
    batch = _augmented_batch()
    expected = np.asarray(full(batch, training=False))
    cached = np.asarray(head(np.asarray(extractor(batch, training=False)), training=False))
    assert np.abs(expected - cached).max() < 1e-5


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    data = make_folder_dataset(root / "data", per_class=10, size=32)
    manifest = split(scan(data), SplitRequest(counts=(6, 4, 0), seed=0))
    manifest.save(root / "workspace", "tiny")
    return manifest, root / "workspace"


def test_the_bank_is_repeatable_and_its_views_differ(tiny_manifest):
    manifest, workspace = tiny_manifest
    cache = FeatureCache(workspace)
    spec = FeatureSpec("vgg16", "none", 32, views=3, seed=5)
    first = np.array(cache.extract(manifest, "train", spec).features)
    assert first.shape[0] == 3 * 18
    cache.clear()
    again = cache.extract(manifest, "train", spec)
    assert not again.hit and np.array_equal(first, np.asarray(again.features))
    other = np.asarray(cache.extract(manifest, "train", FeatureSpec(
        "vgg16", "none", 32, views=3, seed=6)).features)
    assert not np.array_equal(first, other)
    views = first.reshape(3, 18, -1)
    assert not np.allclose(views[0], views[1]) and not np.allclose(views[1], views[2])


def test_each_epoch_shows_every_image_once_and_cycles_its_views():
    images, views = 10, 3
    features = np.arange(images * views, dtype="float32")[:, None]  # row number as feature
    bank = ViewBank(features, np.arange(images), views, batch_size=4, seed=0)
    seen = {i: set() for i in range(images)}
    for _epoch in range(views):
        rows = np.concatenate([bank[b][0][:, 0] for b in range(len(bank))]).astype(int)
        labels = np.concatenate([bank[b][1] for b in range(len(bank))])
        assert sorted(rows % images) == list(range(images))  # every image once
        assert np.array_equal(rows % images, labels)  # each row with its own label
        for row in rows:
            seen[row % images].add(row // images)
        bank.on_epoch_end()
    assert all(v == set(range(views)) for v in seen.values())  # all K views in K epochs


def test_blended_views_mix_two_views_of_the_same_photo_anew_each_epoch():
    """Each photo's input is a point between two different views of that photo (never of
    another one), and the same photo gives a different input in the next epochs."""
    images, views = 8, 4
    # row r = view k of image i holds the constant 100·k + i: a blend of image i's views
    # stays ≡ i (mod 100) only in the mean, so check it through the views' bounds instead
    features = np.stack([np.full((2, 2, 3), 100.0 * k + i, "float32")
                         for k in range(views) for i in range(images)])
    bank = ViewBank(features, np.arange(images, dtype="float32"), views, batch_size=3, seed=5,
                    blend_reach=0.0)
    inputs = []
    for _epoch in range(3):
        batches = [bank[b] for b in range(len(bank))]
        x = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches]).astype(int)
        assert sorted(labels) == list(range(images))  # every photo once
        assert np.all(x == x[:, :1, :1, :1])  # a blend of whole rows, element by element alike
        value = x[:, 0, 0, 0]
        assert np.all(value >= labels - 1e-3) and np.all(value <= labels + 300 + 1e-3)
        between = (value - labels) / 100  # in view units: strictly inside a pair, not on a view
        assert np.mean(np.abs(between - np.round(between)) > 1e-3) > 0.5
        inputs.append(dict(zip(labels, value)))
        bank.on_epoch_end()
    assert all(inputs[0][i] != inputs[1][i] != inputs[2][i] for i in range(images))
    plain = ViewBank(features, np.arange(images, dtype="float32"), views, batch_size=3, seed=5)
    value = np.concatenate([plain[b][0][:, 0, 0, 0] for b in range(len(plain))])
    assert np.all(value % 100 < images)  # without blending: exactly one view each


def test_blends_with_a_reach_go_beyond_their_two_views_but_no_further():
    """λ from [-0.5, 1.5): a blend lies on the line through two views of the photo, at most
    half their difference past either, and often past one of them."""
    images, views = 50, 2
    features = np.stack([np.full((1,), 100.0 * k + i, "float32")
                         for k in range(views) for i in range(images)])  # views i and 100 + i
    bank = ViewBank(features, np.arange(images, dtype="float32"), views, batch_size=10, seed=1,
                    blend_reach=0.5)
    x = np.concatenate([bank[b][0][:, 0] for b in range(len(bank))])
    labels = np.concatenate([bank[b][1] for b in range(len(bank))])
    beyond = (x - labels) / 100  # 0 and 1 are the two views
    assert np.all(beyond >= -0.5 - 1e-4) and np.all(beyond <= 1.5 + 1e-4)
    assert np.mean((beyond < 0) | (beyond > 1)) > 0.25  # half the draws, on average


@pytest.fixture(scope="module")
def fine_tune_bank_run(tiny_manifest):
    manifest, workspace = tiny_manifest
    config = TrainConfig(manifest=manifest.path, backbone="vgg16", weights="none",
                         strategy="fine_tune", image_size=32, epochs=2, fine_tune_epochs=2,
                         learning_rate=1e-3, batch_size=6, view_bank=2, fine_tune_on_bank=True)
    run = Run.create(workspace, config)
    status = train(run, workspace)
    assert status["state"] == "finished", status.get("error")
    return run


def test_reassembled_model_scores_what_the_cached_trainer_scored(fine_tune_bank_run):
    run = fine_tune_bank_run
    phases = run.audit()["phases"]
    assert phases[1]["layers_changed"] == ["block5_conv1", "block5_conv2", "block5_conv3",
                                           "dense", "predictions"]
    best = min(run.epochs(), key=lambda e: e["val_loss"])
    saved = evaluate(run, split="validation")  # the saved full model, on the images
    assert saved["loss"] == pytest.approx(best["val_loss"], abs=1e-4)
    assert saved["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)


def test_fine_tune_head_phase_trains_on_base_outputs_derived_once(fine_tune_bank_run, tmp_path):
    """The head phase does not run the frozen top every epoch: its input, the base's output
    for each view, is computed once from the prefix bank, and is what the photos give."""
    run, config = fine_tune_bank_run, fine_tune_bank_run.config
    manifest, workspace = load_manifest(config.manifest), run.folder.parent.parent
    spec = FeatureSpec("vgg16", "none", 32, seed=config.seed, views=2,
                       augmentation=tuple(config.augmentation.items()))
    derived = FeatureCache(workspace).extract(manifest, "train", spec)
    assert derived.hit  # the run left it in the cache
    meta = read_json(derived.folder / "meta.json")
    prefix = read_json(FeatureCache(workspace).root / meta["derived_from"] / "meta.json")
    assert prefix["spec"]["layer"] == "block4_pool" and prefix["views"] == 2
    from_photos = FeatureCache(tmp_path).extract(manifest, "train", spec)
    assert not from_photos.hit and from_photos.features.shape == derived.features.shape
    # Both stored in float16, the derived rows from float16 prefix rows: one rounding apart.
    assert derived.features.dtype == from_photos.features.dtype == np.float16
    np.testing.assert_allclose(np.asarray(from_photos.features, "float32"),
                               np.asarray(derived.features, "float32"), rtol=2e-3, atol=1e-4)


def test_the_disk_use_shown_before_a_fine_tune_bank_is_what_it_writes(fine_tune_bank_run):
    run, config = fine_tune_bank_run, fine_tune_bank_run.config
    manifest, cache = load_manifest(config.manifest), FeatureCache(run.folder.parent.parent)
    facts = describe("vgg16", 32)
    shown = view_bank_bytes(facts["layer_shapes"], "block4_pool", facts["layers"][-1], views=2,
                            n_train=len(manifest.files("train")[0]),
                            n_val=len(manifest.files("validation")[0]))
    written = {}
    for views, layer, split_name in [(2, "block4_pool", "train"),
                                     (0, "block4_pool", "validation"),
                                     (2, None, "train"), (0, None, "validation")]:
        spec = FeatureSpec("vgg16", "none", 32, seed=config.seed, views=views, layer=layer,
                           augmentation=tuple(config.augmentation.items()) if views else ())
        found = cache.extract(manifest, split_name, spec)
        assert found.hit  # the run cached exactly these four sets
        written[(layer, split_name)] = found.features.nbytes
    assert shown == {"training views": written[("block4_pool", "train")],
                     "validation": written[("block4_pool", "validation")],
                     "head phase": written[(None, "train")] + written[(None, "validation")]}


def test_fine_tune_by_default_trains_its_head_on_the_bank_and_fine_tunes_on_the_fly(
        tiny_manifest, tmp_path):
    """The default: the head phase reads the bank at the base's output (the same cache entry
    feature_extraction_augmented fills, so one serves both), and the fine-tuning phase runs
    the base over new augmented photos, so no prefix bank is written for it."""
    manifest, workspace = tiny_manifest
    config = TrainConfig(manifest=manifest.path, backbone="vgg16", weights="none",
                         strategy="fine_tune", image_size=32, epochs=2, fine_tune_epochs=2,
                         learning_rate=1e-3, batch_size=6, view_bank="auto", seed=11,
                         precision="float32")
    run = Run.create(tmp_path, config)
    status = train(run, tmp_path)
    assert status["state"] == "finished", status.get("error")
    assert status["view_bank"]["views"] == 3  # 2 head epochs: never fewer than 3 views
    cache = FeatureCache(tmp_path)
    specs = [read_json(meta)["spec"] for meta in cache.root.rglob("meta.json")]
    assert {(s["layer"], s["views"]) for s in specs} == {(None, 3), (None, 0)}
    augmented = FeatureSpec("vgg16", "none", 32, seed=11, views=3,
                            augmentation=tuple(config.augmentation.items()))
    assert cache.extract(manifest, "train", augmented).hit  # what the augmented strategy reads
    phases = run.audit()["phases"]
    assert phases[0]["layers_changed"] == ["dense", "predictions"]
    assert phases[1]["layers_changed"] == ["block5_conv1", "block5_conv2", "block5_conv3",
                                           "dense", "predictions"]
    # the fine-tuning epochs trained on the photos: the saved model scores their validation
    last = run.epochs()[-1]
    assert last["phase_name"] == "fine_tune"
    saved = evaluate(run, split="validation")
    assert saved["loss"] == pytest.approx(last["val_loss"], abs=1e-4)
