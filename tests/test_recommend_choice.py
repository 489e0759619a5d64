"""The head choice's guard against validation noise: another head replaces the linear one only
when McNemar's exact test finds its gain on the validation photos unlikely to be chance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transfer_core.recommend import (SIGNIFICANCE, choice_line, choose, mcnemar_p,
                                     recommendation_lines, search)
from transfer_core.runs import TrainConfig


def test_mcnemars_exact_p_on_known_counts():
    assert mcnemar_p(4, 0) == pytest.approx(0.125)  # 2 × 0.5⁴
    assert mcnemar_p(0, 4) == pytest.approx(0.125)  # two-sided
    assert mcnemar_p(6, 0) == pytest.approx(0.03125)  # 2 × 0.5⁶
    assert mcnemar_p(20, 2) == pytest.approx(2 * sum(math.comb(22, k) for k in range(3))
                                             / 2 ** 22)
    assert mcnemar_p(20, 2) < SIGNIFICANCE < mcnemar_p(4, 0)
    assert mcnemar_p(0, 0) == 1.0  # the same photos right: no evidence either way
    assert mcnemar_p(5, 5) == 1.0


def candidate(head, right, loss=0.5):
    return {"head": head, "pooling": "avg", "dense_units": 256, "weight_decay": 0.0,
            "val_accuracy": float(np.mean(right)), "val_loss": loss}


def scored(photos, both, only_linear, only_other):
    """(linear's, the other's) per-photo correctness: `both` right for both, then the photos
    only one of them gets right."""
    linear, other = np.zeros(photos, bool), np.zeros(photos, bool)
    linear[:both] = other[:both] = True
    linear[both:both + only_linear] = True
    other[both + only_linear:both + only_linear + only_other] = True
    return linear, other


def test_four_more_of_forty_keeps_the_linear_head():
    linear, chapter = scored(40, 26, 0, 4)  # 65% against 75%: flowers seed 42, round 4b
    tried = [candidate("linear", linear), {**candidate("chapter", chapter), "pooling": "flatten"}]
    assert choose(tried, [linear, chapter])["head"] == "linear"
    assert tried[1]["against_linear"] == {"gained": 4, "lost": 0, "photos": 40, "p": 0.125}
    line = choice_line({"tried": tried, "chosen_head": "linear"})
    assert line.startswith("The linear head kept: the chapter's settings")
    assert "scored 4 more of 40 validation photos" in line
    assert "within chance (McNemar p = 0.12)" in line


def test_a_clear_gain_switches_and_the_best_of_those_that_pass_wins():
    linear, avg = scored(200, 150, 2, 20)
    _, flatten = scored(200, 150, 2, 30)
    tried = [candidate("linear", linear), candidate("avg", avg),
             {**candidate("flatten", flatten), "pooling": "flatten"}]
    assert choose(tried, [linear, avg, flatten])["head"] == "flatten"  # both pass: the best
    assert tried[1]["against_linear"] == {"gained": 20, "lost": 2, "photos": 200,
                                          "p": float(f"{mcnemar_p(20, 2):.3g}")}
    assert tried[1]["against_linear"]["p"] < SIGNIFICANCE
    # an accuracy tie cannot pass: the photos gained and lost are as many
    even = linear.copy()
    even[:2], even[152:154] = False, True
    tie = [candidate("linear", linear, loss=0.6), candidate("avg", even, loss=0.1)]
    assert choose(tie, [linear, even])["head"] == "linear"


def xor_problem(seed, n_train=200, n_validation=200):
    """Averaged features whose class is the sign of the product of two of them: a linear
    model is at chance, the chapter's hidden layer learns it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n_train + n_validation, 1, 1, 4))
    x[..., :2] += 0.3 * np.sign(x[..., :2])  # a margin around the axes
    y = (x[:, 0, 0, 0] * x[:, 0, 0, 1] > 0).astype(int)
    x = x.astype("float32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


@pytest.fixture
def linear_and_avg_only(monkeypatch):
    monkeypatch.setattr("transfer_core.recommend.HEADS", ("linear", "avg"))
    monkeypatch.setattr("transfer_core.recommend.CHAPTER_BUDGET", 0)  # quicker


def xor_search(n_validation):
    train_set, validation = xor_problem(seed=4)
    validation = (validation[0][:n_validation], validation[1][:n_validation])
    return search(TrainConfig(manifest="m.json", batch_size=10, seed=4), train_set,
                  validation, 2)


def test_a_hidden_layer_ahead_by_a_few_photos_keeps_the_linear_head(linear_and_avg_only):
    # Five validation photos: however many the avg head gains, at most 5 to none, p >= 0.0625
    found = xor_search(5)
    linear, avg = found["tried"]
    assert avg["val_accuracy"] > linear["val_accuracy"]  # the old rule would switch
    assert found["chosen_head"] == "linear"
    assert found["chosen"]["dense_units"] == 0
    assert avg["against_linear"]["gained"] > avg["against_linear"]["lost"]
    assert avg["against_linear"]["p"] >= SIGNIFICANCE
    assert "val_correct" not in avg and "val_correct" not in found["weight_decay"]  # counts only
    lines = recommendation_lines(found)
    assert any(line.startswith("The linear head kept: avg → Dense 256 scored ")
               and "within chance (McNemar p = " in line for line in lines)
    assert "McNemar" in found["rule"]["head"]


def test_a_hidden_layer_ahead_by_many_photos_replaces_the_linear_head(linear_and_avg_only):
    found = xor_search(200)
    linear, avg = found["tried"]
    assert linear["val_accuracy"] < 0.65 < 0.85 < avg["val_accuracy"]  # the problem as built
    assert found["chosen_head"] == "avg"
    assert found["chosen"]["dense_units"] == 256
    assert avg["against_linear"]["p"] < SIGNIFICANCE
    assert avg["against_linear"]["photos"] == 200
    line = choice_line(found)
    assert line.startswith("Avg → Dense 256 replaces the linear head: it scored ")
    assert "unlikely to be chance" in line and line in recommendation_lines(found)
