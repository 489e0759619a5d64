"""Recommended settings: the learning-rate range test, what a recommended run records, and
that the chapter's presets keep the chapter's settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import make_folder_dataset
from transfer_core.cli import build_parser
from transfer_core.commands import _train_config
from transfer_core.datasets import SplitRequest, load_manifest, scan, split
from transfer_core.export import export_run
from transfer_core.predict import Predictor, load_run_model
from transfer_core.baseline import fit_logistic
from transfer_core.recommend import (CHAPTER_BUDGET, HEADS, KEEP_EPOCHS, KEEP_RATE,
                                     SCREEN_EPOCHS, SIGNIFICANCE, _BehindAtEqualEpochs,
                                     chapter_settings, default_settings, head_settings,
                                     lr_range_test,
                                     range_test_figure, recommendation_lines, search,
                                     set_logistic, try_head)
from transfer_core.runs import Run, TrainConfig
from transfer_core.storage import read_json
from transfer_core.strategies import adapt_standardizer, build_head, compile_model
from transfer_core.training import train


def synthetic_problem(seed=0, n=400, dims=16):
    """Two Gaussian classes a linear model separates well, standardized inputs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, dims)) + np.outer(2 * y - 1, rng.normal(0, 0.6, dims))
    return x.astype("float32"), y.astype("float32")


def logistic_model(dims=16):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((dims,)), keras.layers.Dense(1, activation="sigmoid")])


def loss_after(rate, x, y, steps=100, batch=20):
    """The oracle: the training loss after `steps` batches at a fixed `rate`."""
    model = logistic_model()
    compile_model(model, 2, rate)
    model.fit(x, y, batch_size=batch, epochs=steps * batch // len(x), verbose=0, shuffle=False)
    return float(model.evaluate(x, y, verbose=0)[0])


def test_the_range_test_picks_a_rate_in_the_known_good_range():
    x, y = synthetic_problem()
    model = logistic_model()
    compile_model(model, 2, 1e-7)
    found = lr_range_test(model, x, y, batch_size=20)
    # The good range, measured: rates whose loss after the same 100 batches is within 25% of
    # the best rate's (too low barely moves from ln 2; too high overshoots).
    grid = [10.0 ** e for e in range(-6, 1)]
    losses = {rate: loss_after(rate, x, y) for rate in grid}
    best = min(losses.values())
    good = [rate for rate, loss in losses.items() if loss <= 1.25 * best]
    assert min(good) / 3 <= found["chosen"] <= max(good) * 3, (found["chosen"], losses)
    assert losses[1e-6] > 1.25 * best  # the problem has a range to find: not every rate works
    assert found["chosen"] == pytest.approx(
        found["rates"][int(np.argmin(found["losses"]))] / 10)  # the stated rule


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    folder = make_folder_dataset(root / "colours", 20)
    workspace = root / "workspace"
    manifest = split(scan(folder, workers=1), SplitRequest(counts=(12, 4, 4))).save(
        workspace, "colours")
    return workspace, manifest


def test_a_recommended_run_records_what_it_tried_and_chose(colours):
    workspace, manifest = colours
    config = TrainConfig(manifest=str(manifest), backbone="vgg16", weights="none",
                         image_size=32, batch_size=4, settings="recommended")
    run = Run.create(workspace, config, "recommended")
    assert train(run, workspace)["state"] == "finished"
    saved = read_json(run.folder / "config.json")
    found = saved["recommendation"]
    # 36 tiny training photos: the chapter's settings are cheap enough to be a candidate
    assert [t["head"] for t in found["tried"]] == [*HEADS, "chapter"]
    # the linear head, unless a more accurate one passes McNemar's test on the 12 validation
    # photos (recorded as counts); then the most accurate of those, ties to the lower loss
    linear, *others = found["tried"]
    assert all(t["against_linear"]["photos"] == 12 for t in others)
    passed = [linear] + [t for t in others if t["val_accuracy"] > linear["val_accuracy"]
                         and t["against_linear"]["p"] < SIGNIFICANCE]
    chosen = min(passed, key=lambda t: (-t["val_accuracy"], t["val_loss"]))
    assert found["chosen_head"] == chosen["head"]
    assert saved["pooling"] == chosen["pooling"] == found["chosen"]["pooling"]
    assert saved["dense_units"] == chosen["dense_units"]
    assert saved["standardize"] == chosen["standardize"] == (chosen["head"] == "linear")
    linear = found["tried"][0]  # its weight decay from the C chosen on validation
    n_train = 12 * 3  # 12 training photos of each of the three colours
    assert linear["weight_decay"] == pytest.approx(1 / (2 * found["weight_decay"]["C"] * n_train))
    # the linear head is the logistic regression: its validation scores are the C chosen's
    logistic = next(t for t in found["weight_decay"]["tried"]
                    if t["C"] == found["weight_decay"]["C"])
    assert linear["val_accuracy"] == logistic["val_accuracy"]
    assert saved["learning_rate"] == found["chosen"]["learning_rate"]
    assert saved["epochs"] == found["chosen"]["epochs"]
    hidden = [t for t in found["tried"] if t["head"] in ("avg", "flatten")]
    for tried in hidden:
        curve = tried["range_test"]
        assert len(curve["rates"]) == len(curve["losses"]) > 10
        assert curve["rates"] == sorted(curve["rates"])  # the sweep rises
    assert run.config.recommendation == found  # the Curves page reads it back
    assert 1 <= len(run.epochs()) <= saved["epochs"]  # epoch lines for the Curves page
    figure = range_test_figure(found)  # the Curves page's: each curve and its chosen point
    stars = [t for t in figure.data if t.mode == "markers"]
    assert [s.x[0] for s in stars] == [t["learning_rate"] for t in hidden]
    lines = recommendation_lines(found)
    assert lines[-1].startswith("Chosen: ")
    assert any(line.startswith("the chapter's settings") for line in lines)


def test_the_chapters_presets_default_to_the_chapters_settings(tmp_path):
    chapter = load_manifest_for(tmp_path, SplitRequest(preset="chapter"), per_class=8)
    custom = load_manifest_for(tmp_path, SplitRequest(counts=(2, 2, 2)), per_class=8)
    assert default_settings(chapter)[0] == "chapter"
    assert default_settings(custom)[0] == "recommended"
    parser = build_parser()
    for manifest, expected in ((chapter, "chapter"), (custom, "recommended")):
        args = parser.parse_args(["train", "--data", manifest.path])
        assert _train_config(args).settings == expected
        args = parser.parse_args(["train", "--data", manifest.path, "--settings", "chapter"])
        config = _train_config(args)
        assert (config.settings, config.learning_rate, config.pooling, config.epochs) == (
            "chapter", 2e-5, "flatten", 30)
    assert TrainConfig(manifest="m.json").settings == "chapter"  # the core's default


def load_manifest_for(tmp_path, request, per_class):
    from conftest import make_kaggle_dataset

    name = request.preset or "custom"
    folder = make_kaggle_dataset(tmp_path / name, per_class)
    if request.preset:  # the chapter's preset needs 2000 + 1000 + 1000 photos per class
        request = SplitRequest(counts=(2, 2, 2))
        manifest = split(scan(folder, workers=1), request)
        manifest.request["preset"] = "chapter"
    else:
        manifest = split(scan(folder, workers=1), request)
    return load_manifest(manifest.save(tmp_path / "workspace", name))


def screened(own_losses, rival_losses):
    """The epoch after which _BehindAtEqualEpochs stops a fit with these validation losses."""
    rule = _BehindAtEqualEpochs(rival_losses, SCREEN_EPOCHS)
    rule.set_model(logistic_model())
    rule.model.stop_training = False  # as fit() starts
    for epoch, loss in enumerate(own_losses):
        rule.on_epoch_end(epoch, {"val_loss": loss})
        if rule.model.stop_training:
            return rule.stopped_after
    return None


def test_the_flatten_fit_stops_once_it_is_behind_at_equal_epochs():
    rival = [0.5, 0.4, 0.3, 0.25, 0.24]
    assert screened([0.6, 0.5, 0.45, 0.2], rival) == SCREEN_EPOCHS  # behind from the start
    assert screened([0.6, 0.35, 0.31, 0.2], rival) == SCREEN_EPOCHS  # its best 0.31 > 0.3
    assert screened([0.4, 0.3, 0.2, 0.3, 0.25, 0.22], rival) is None  # ahead: runs on
    assert screened([0.4, 0.3, 0.29, 0.28, 0.27, 0.26], rival) == 4  # overtaken at epoch 4
    assert screened([0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2], rival) is None  # past the rival's end


def test_the_search_honours_class_weights():
    # Nine photos of class 0 for one of class 1: "balanced" weighs class 1 nine times more,
    # in the range test, the fit and the validation loss that chooses.
    rng = np.random.default_rng(0)
    y = (np.arange(100) % 10 == 0).astype("float32")
    x = (rng.normal(0, 1, (100, 2, 2, 4)) + 1.5 * y[:, None, None, None]).astype("float32")
    config = TrainConfig(manifest="m.json", batch_size=10)
    config = replace(config, **head_settings("avg", config, 0.0))
    plain, weighted = (try_head("avg", replace(config, class_weight=mode), (x[:60], y[:60]),
                                (x[60:], y[60:]), 2) for mode in ("none", "balanced"))
    assert plain["class_weight"] is None
    assert weighted["class_weight"] == {"0": pytest.approx(60 / 108), "1": pytest.approx(5)}
    assert weighted["range_test"]["losses"][:3] != plain["range_test"]["losses"][:3]
    assert weighted["val_losses"][0] != pytest.approx(plain["val_losses"][0])


def few_photos_many_features(seed, n_train=40, n_validation=400, dims=256, informative=8):
    """Averaged features as a conv base gives them (positive, far from standardized): 40
    photos, 256 features of which 8 carry a linear signal. The chapter's Dense 256 can learn
    the 40 photos by heart; a logistic regression cannot."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_train + n_validation)
    x = rng.normal(0, 1, (len(y), 1, 1, dims))
    x[..., :informative] += 0.8 * (2 * y - 1)[:, None, None, None]
    x = (3 + 2 * x).astype("float32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def test_where_the_hidden_layer_overfits_the_search_picks_the_linear_head():
    train_set, validation = few_photos_many_features(seed=1)
    found = search(TrainConfig(manifest="m.json", batch_size=10, seed=1), train_set,
                   validation, 2)
    linear, *hidden = found["tried"]
    assert linear["head"] == "linear" and linear["standardize"] and linear["dense_units"] == 0
    assert linear["val_loss"] < min(t["val_loss"] for t in hidden) - 0.1
    assert linear["val_accuracy"] > max(t["val_accuracy"] for t in hidden)
    assert linear["val_accuracy"] > 0.75  # it learnt the signal, not just the prior
    chosen = found["chosen"]
    assert (chosen["dense_units"], chosen["standardize"], chosen["pooling"]) == (0, True, "avg")
    assert chosen["weight_decay"] == linear["weight_decay"] > 0
    assert any("Weight decay: C = " in line for line in recommendation_lines(found))


def test_a_linear_standardized_head_trains_saves_predicts_and_exports(colours, tmp_path):
    workspace, manifest = colours
    config = TrainConfig(manifest=str(manifest), backbone="vgg16", weights="none",
                         image_size=32, batch_size=4, epochs=3, learning_rate=1e-2,
                         pooling="avg", dense_units=0, dropout=0.0, standardize=True,
                         weight_decay=1e-3)
    run = Run.create(workspace, config, "linear")
    assert train(run, workspace)["state"] == "finished"
    saved = read_json(run.folder / "config.json")
    assert (saved["dense_units"], saved["standardize"], saved["weight_decay"]) == (0, True, 1e-3)
    head = load_run_model(run).get_layer("head")
    assert [layer.name for layer in head.layers] == ["avg_pool", "standardize", "dropout",
                                                     "predictions"]
    # Standardized on the training split's averaged features: their means, not zeros
    means = np.asarray(head.get_layer("standardize").mean).ravel()
    assert np.abs(means).max() > 0
    results = Predictor(run, ood=False).predict(
        [p for p in load_manifest(manifest).files("test")[0]])
    assert len(results) == 12 and all(r["label"] in ("red", "green", "blue") for r in results)
    # The export rebuilds the model from its layers and checks its labels against the app's
    # (ExportError otherwise), here with the standardizing layer inside the head.
    exported = export_run(run, ["keras", "tflite"], tmp_path, parity_images=4,
                          representative_images=4)
    assert Path(exported["zip"]).exists()


def test_a_search_recorded_before_the_linear_head_still_reads():
    # A round-3 run's config.json: two inputs, no "head", no weight decay, its own rule keys
    tried = {"pooling": "avg", "learning_rate": 2.8e-4, "best_epoch": 17, "epochs_run": 22,
             "val_loss": 0.91, "val_accuracy": 0.65, "stopped_behind": None,
             "range_test": {"rates": [1e-5, 1e-4, 1e-3], "losses": [1.6, 1.2, 1.5]}}
    old = {"tried": [{**tried, "pooling": "flatten", "stopped_behind": 3}, tried],
           "chosen": {"pooling": "avg", "learning_rate": 2.8e-4, "epochs": 22,
                      "early_stopping_patience": 5, "monitor": "val_loss"},
           "rule": {"learning_rate": "range test", "pooling": "the lower loss",
                    "epochs": "best + 5"}, "seconds": 12.0}
    lines = recommendation_lines(old)
    assert lines[0].startswith("flatten → Dense 256: rate 2.8e-04")
    assert "stopped after 3" in lines[0]
    assert lines[-1].startswith("Chosen: avg → Dense 256 at 2.8e-04 for at most 22 epochs")
    assert len(range_test_figure(old).data) == 4


def test_a_feature_constant_in_training_does_not_blow_up_the_standardized_head():
    config = TrainConfig(manifest="m.json", pooling="avg", dense_units=0, standardize=True)
    head = build_head((1, 1, 3), 2, config)
    train_features = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 4.0]], "float32")  # feature 1: 0
    adapt_standardizer(head, train_features)
    layer = head.get_layer("standardize")
    lit = layer(np.array([[2.0, 1.0, 3.0]], "float32"))  # a photo that lights feature 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(lit), [[0.0, 1.0, 0.0]], atol=1e-6)


def test_the_linear_heads_predictions_are_the_logistic_regressions():
    # Three classes: the softmax output takes the multinomial coefficients
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    x = (rng.normal(0, 1, (300, 12)) + np.eye(3)[y] @ rng.normal(0, 1.5, (3, 12)) + 4)
    x = x.astype("float32")
    fitted = fit_logistic((x[:200], y[:200]), 0.1, seed=0)
    config = TrainConfig(manifest="m.json", **head_settings("linear", TrainConfig(
        manifest="m.json"), 1e-3))
    head = build_head((1, 1, 12), 3, config)
    set_logistic(head, fitted)
    ours = head.predict(x[200:].reshape(-1, 1, 1, 12), verbose=0)
    np.testing.assert_allclose(ours, fitted.predict_proba(x[200:]), atol=1e-4)
    # kept as it is by its recording epoch: the run's saved head stays the baseline
    compile_model(head, 3, KEEP_RATE)
    head.fit(x[:200].reshape(-1, 1, 1, 12), y[:200], epochs=KEEP_EPOCHS, batch_size=20,
             verbose=0)
    after = head.predict(x[200:].reshape(-1, 1, 1, 12), verbose=0)
    np.testing.assert_array_equal(after.argmax(1), fitted.predict(x[200:]))
    np.testing.assert_allclose(after, ours, atol=1e-3)


def test_a_recommended_linear_run_saves_the_baseline_logistic_regression(colours):
    from transfer_core.baseline import baseline
    from transfer_core.evaluation import evaluate
    from transfer_core.recommend import chosen_settings

    workspace, manifest = colours
    config = TrainConfig(manifest=str(manifest), backbone="vgg16", weights="none",
                         image_size=32, batch_size=4)
    logistic = baseline(Run.create(workspace, config, "probe"), workspace=workspace)
    decay = {"C": logistic["C"], "weight_decay": 1e-3}
    # a search that chose the linear head at the baseline's C, as recorded in config.json
    config = replace(config, settings="recommended", **chosen_settings(
        {"head": "linear"}, config, decay),
        recommendation={"chosen_head": "linear", "weight_decay": decay})
    run = Run.create(workspace, config, "linear-start")
    assert train(run, workspace)["state"] == "finished"
    assert len(run.epochs()) == KEEP_EPOCHS  # an epoch line for the Curves page
    assert evaluate(run)["accuracy"] == pytest.approx(logistic["accuracy"])
    assert baseline(run, workspace=workspace)["C"] == logistic["C"]


def chapter_wins(seed, n_train=60, n_validation=200):
    """Flattened 2 × 2 maps whose class is set by where a feature lights, not by how much on
    average: averaging erases it (the linear and averaged heads are at chance), and the
    chapter's head on the flattened maps learns it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_train + n_validation)
    x = rng.normal(0, 0.3, (len(y), 2, 2, 4))
    x[y == 0, 0, 0, 0] += 3
    x[y == 1, 1, 1, 0] += 3
    x = x.astype("float32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def test_the_chapters_settings_are_chosen_when_they_validate_best(monkeypatch):
    # Without the flatten head at its range-test rate (which learns this set as well, at a
    # lower loss): the chapter's settings are then the one candidate that reads the maps whole.
    monkeypatch.setattr("transfer_core.recommend.HEADS", ("linear", "avg"))
    train_set, validation = chapter_wins(seed=2)
    found = search(TrainConfig(manifest="m.json", batch_size=10, seed=2), train_set,
                   validation, 2)
    chapter = next(t for t in found["tried"] if t["head"] == "chapter")
    assert chapter["val_accuracy"] >= max(t["val_accuracy"] for t in found["tried"])
    assert found["tried"][0]["val_accuracy"] < 0.7  # the averaged features carry no signal
    assert found["chosen_head"] == "chapter"
    assert found["chosen"] == chapter_settings()  # the chapter's 30 epochs at 2e-5, the last


def test_the_chapters_settings_are_skipped_over_the_budget(monkeypatch):
    train_set, validation = chapter_wins(seed=2)
    monkeypatch.setattr("transfer_core.recommend.CHAPTER_BUDGET", 1000)
    monkeypatch.setattr("transfer_core.recommend.HEADS", ("linear", "avg"))  # quicker
    found = search(TrainConfig(manifest="m.json", batch_size=10, seed=2), train_set,
                   validation, 2)
    assert "chapter" not in [t["head"] for t in found["tried"]]
    assert found["skipped"][0]["head"] == "chapter"
    assert "over the search's budget" in found["skipped"][0]["reason"]
    assert any("not tried" in line for line in recommendation_lines(found))
    assert CHAPTER_BUDGET > 60 * 16 * 30  # this little set is inside the real budget
