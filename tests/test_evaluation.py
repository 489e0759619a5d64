"""Test-split evaluation: accuracy of each trained strategy, the figures in evaluation.json, and
that a second look is read from the file instead of recomputed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_training import COUNTS, STRATEGIES, trained_runs
from transfer_core import evaluation
from transfer_core.evaluation import current_evaluation, evaluate, summarize
from transfer_core.storage import read_json

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_runs(tmp_path_factory)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_beats_chance_on_the_test_split(trained, strategy):
    result = evaluate(trained["runs"][strategy])
    assert result["split"] == "test" and result["images"] == 3 * COUNTS[2]
    assert result["accuracy"] >= 0.6, result  # chance is 1/3


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_evaluation_json_holds_every_figure(trained, strategy):
    run = trained["runs"][strategy]
    evaluate(run)
    saved = read_json(run.folder / "evaluation.json")
    assert saved["classes"] == CLASSES
    matrix = np.array(saved["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum(axis=1).tolist() == [COUNTS[2]] * 3  # rows: the true class
    assert np.trace(matrix) / matrix.sum() == pytest.approx(saved["accuracy"])
    for index, name in enumerate(CLASSES):
        figures = saved["per_class"][name]
        assert figures["support"] == COUNTS[2]
        assert figures["recall"] == pytest.approx(matrix[index, index] / COUNTS[2])
        predicted = matrix[:, index].sum()
        assert figures["precision"] == pytest.approx(matrix[index, index] / predicted
                                                     if predicted else 0.0)
        p, r = figures["precision"], figures["recall"]
        assert figures["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert len(saved["mistakes"]) == matrix.sum() - np.trace(matrix)
    confidences = [m["confidence"] for m in saved["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    assert saved["roc_auc"] is None  # three classes
    assert np.isfinite(saved["loss"])


def test_a_second_evaluate_is_read_from_evaluation_json(trained, monkeypatch):
    run = trained["runs"]["fine_tune"]
    first = evaluate(run)

    def no_model(run):
        raise AssertionError("evaluate loaded the model again")

    monkeypatch.setattr(evaluation, "load_run_model", no_model)
    assert evaluate(run) == first
    # A new model.keras (a later epoch, another run in the folder) makes the file stale.
    stat = run.model_path.stat()
    os.utime(run.model_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(AssertionError, match="loaded the model again"):
        evaluate(run)
    monkeypatch.undo()
    assert evaluate(run)["model_mtime_ns"] == run.model_path.stat().st_mtime_ns


def test_an_evaluation_of_another_split_is_not_the_test_result(trained):
    """What the Evaluate page shows: evaluation.json only when it is of this model and split."""
    run = trained["runs"]["feature_extraction"]
    assert evaluate(run, split="validation")["split"] == "validation"
    assert current_evaluation(run, "validation")["split"] == "validation"
    assert current_evaluation(run) is None  # the page offers "Evaluate on the test split"
    assert evaluate(run)["split"] == "test" and current_evaluation(run)["split"] == "test"


def test_two_class_run_reports_roc_auc(trained):
    result = evaluate(trained["binary"])
    assert result["classes"] == ["blue", "red"]
    assert np.array(result["confusion_matrix"]).shape == (2, 2)
    assert result["accuracy"] >= 0.7
    assert 0.5 < result["roc_auc"] <= 1.0


def test_summarize_two_classes_gives_roc_auc():
    positive = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - positive, positive], axis=1)
    result = summarize(probs, np.array([0, 0, 1, 1]), ["cat", "dog"], ["a", "b", "c", "d"])
    assert result["roc_auc"] == pytest.approx(0.75)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["confusion_matrix"] == [[2, 0], [1, 1]]
    assert [m["path"] for m in result["mistakes"]] == ["c"]
    assert result["mistakes"][0]["true"] == "dog" and result["mistakes"][0]["predicted"] == "cat"


def test_summarize_lists_mistakes_most_confident_first():
    probs = np.array([[0.9, 0.05, 0.05],   # right
                      [0.2, 0.7, 0.1],     # wrong, 0.7
                      [0.1, 0.05, 0.85],   # wrong, 0.85
                      [0.4, 0.25, 0.35],   # right
                      [0.3, 0.6, 0.1]])    # wrong, 0.6
    labels = np.array([0, 2, 1, 0, 0])
    result = summarize(probs, labels, CLASSES, ["p0", "p1", "p2", "p3", "p4"])
    assert [m["path"] for m in result["mistakes"]] == ["p2", "p1", "p4"]
    assert [m["confidence"] for m in result["mistakes"]] == pytest.approx([0.85, 0.7, 0.6])
    first = result["mistakes"][0]
    assert (first["path"], first["true"], first["predicted"]) == ("p2", "green", "red")
    assert first["probabilities"] == pytest.approx({"blue": 0.1, "green": 0.05, "red": 0.85})
    assert result["per_class"]["blue"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert result["roc_auc"] is None


def test_a_split_evaluated_on_validation_says_so(trained, monkeypatch):
    """Split folders without a test folder, the user chose to evaluate on validation: the
    evaluation uses the validation photos and records it, for the Evaluate page to say."""
    from transfer_core.datasets import Manifest

    run = trained["runs"][STRATEGIES[0]]
    real = evaluation.load_manifest(run.config.manifest)
    laid_out = Manifest(real.root, real.classes, [r for r in real.rows if r[2] != "test"],
                        {**real.request, "preset": "as-laid-out", "test_from": "validation"})
    monkeypatch.setattr(evaluation, "load_manifest", lambda path: laid_out)
    result = evaluate(run, force=True)
    assert result["evaluated_on"] == "validation"
    assert result["images"] == 3 * COUNTS[1]
    monkeypatch.undo()
    assert evaluate(run, force=True)["evaluated_on"] == "test"  # as the other tests expect


def test_a_feature_extraction_run_is_scored_beside_a_logistic_regression(trained):
    """The Evaluate page and `evaluate` show a plain linear model on the same features."""
    from transfer_core.baseline import C_GRID, baseline_lines

    run = trained["runs"]["feature_extraction"]
    result = evaluate(run, force=True)
    found = read_json(run.folder / "evaluation.json")["baseline"]
    assert found == result["baseline"]
    assert found["images"] == 3 * COUNTS[2] and found["val_images"] == 3 * COUNTS[1]
    assert found["accuracy"] >= 0.6  # colours: easy for a linear model too; chance is 1/3
    best = max(found["tried"], key=lambda t: (t["val_accuracy"], -t["val_loss"]))
    assert found["C"] == best["C"] and [t["C"] for t in found["tried"]] == list(C_GRID)
    text = " ".join(baseline_lines(result))
    assert "logistic regression" in text and "Wilson interval" in text
    assert "earns its keep" in text or "does no better" in text or "does not earn" in text


def test_the_baseline_scored_in_chunks_equals_the_whole_split_scores(trained):
    """Validation and test are scored a few photos at a time (memory flat in the dataset's
    size): the same C, accuracies and losses as fitting and scoring on the whole pooled
    arrays, with chunks of 2 photos that leave a shorter last chunk."""
    from sklearn.metrics import accuracy_score

    from transfer_core import baseline as linear
    from transfer_core.datasets import load_manifest
    from transfer_core.feature_rows import pooled
    from transfer_core.features import FeatureCache
    from transfer_core.training import feature_spec

    run = trained["runs"]["feature_extraction"]
    manifest, spec = load_manifest(run.config.manifest), feature_spec(run.config)
    cache = FeatureCache(run.folder.parent.parent)

    def whole(name):
        found = cache.extract(manifest, name, spec)
        return pooled(found.features), np.asarray(found.labels)

    train, validation, test = whole("train"), whole("validation"), whole("test")
    assert len(test[1]) % 2 == 1 or len(validation[1]) % 2 == 1  # a shorter last chunk
    model, tried = linear.fit_baseline(train, validation, seed=run.config.seed)
    chunked = linear.baseline(run, chunk_rows=2)
    assert chunked["C"] == model[-1].C
    assert chunked["accuracy"] == float(accuracy_score(test[1], model.predict(test[0])))
    assert [t["C"] for t in chunked["tried"]] == [t["C"] for t in tried]
    assert [t["val_accuracy"] for t in chunked["tried"]] == [t["val_accuracy"] for t in tried]
    assert [t["val_loss"] for t in chunked["tried"]] == pytest.approx(
        [t["val_loss"] for t in tried], rel=1e-9)
    assert chunked["images"] == len(test[1]) and chunked["val_images"] == len(validation[1])


def test_runs_that_train_on_augmented_views_have_no_baseline(trained):
    assert evaluate(trained["runs"]["fine_tune"])["baseline"] is None
