"""Test-split evaluation: accuracy of each trained strategy, the figures in evaluation.json, and
that a second look is read from the file instead of recomputed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_training import COUNTS, STRATEGIES, trained_runs
from transfer_core import evaluation
from transfer_core.evaluation import evaluate, summarize
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
