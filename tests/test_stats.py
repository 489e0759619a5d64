"""Intervals and the paired test, against values worked out by hand."""

import math

import pytest
from scipy import stats as scipy_stats

from transfer_core.stats import (accuracy_text, comparison_text, mean_interval,
                                 paired_comparison, wilson_interval)


def test_wilson_interval_matches_the_textbook_example():
    # 8 of 10 at 95%: centre (0.8 + z²/20) / (1 + z²/10), z = 1.95996 (Wilson 1927).
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_wilson_interval_matches_the_published_example():
    # Wilson (1927) via Newcombe (1998), example: 81 of 263 → 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


def test_wilson_interval_stays_inside_zero_and_one_at_the_edges():
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] > 0.8
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_accuracy_text_reads_as_the_issue_asks():
    text = accuracy_text(0.974, 2000)
    assert text.startswith("97.4% (96.6–98.0, 95% Wilson interval over 2,000 test photos)")


def test_mean_interval_is_students_t():
    values = [0.970, 0.975, 0.972]
    found = mean_interval(values)
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (found.mean, found.low, found.high) == pytest.approx((mean, mean - half, mean + half))
    assert "t interval over 3 seeds" in found.text()
    assert mean_interval([0.9]).text() == "90.0% (one seed: no interval)"


def test_paired_comparison_by_hand():
    a, b = [0.970, 0.975, 0.972], [0.960, 0.962, 0.965]
    # differences 0.010, 0.013, 0.007: mean 0.010, sd 0.003, t = 0.010 / (0.003 / √3)
    t = 0.010 / (0.003 / math.sqrt(3))
    result = paired_comparison(a, b)
    assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(t, 2), rel=1e-6)
    assert result.significant() and result.difference.mean == pytest.approx(0.010)
    assert comparison_text("fine_tune", "feature_extraction", result).startswith(
        "fine_tune beat feature_extraction by 1.0 points (")
    assert comparison_text("feature_extraction", "fine_tune",
                           paired_comparison(b, a)).startswith("fine_tune beat feature_extraction")


def test_noise_is_not_called_a_difference():
    result = paired_comparison([0.970, 0.960, 0.975], [0.968, 0.972, 0.962])
    assert not result.significant()
    assert "is not distinguishable from" in comparison_text("x", "y", result)
    assert "one seed" in comparison_text("x", "y", paired_comparison([0.9], [0.8]))
    with pytest.raises(ValueError, match="one pair per seed"):
        paired_comparison([0.9, 0.8], [0.9])


def test_cli_evaluate_and_runs_show_the_interval(tmp_path, capsys):
    from conftest import make_folder_dataset
    from test_training import FAST
    from transfer_core.cli import main
    from transfer_core.datasets import SplitRequest, scan, split
    from transfer_core.runs import Run, TrainConfig
    from transfer_core.training import train

    workspace = tmp_path / "workspace"
    colours = make_folder_dataset(tmp_path / "colours", per_class=8)
    manifest = split(scan(colours, workers=1), SplitRequest(counts=(4, 2, 2))).save(workspace)
    run = Run.create(workspace, TrainConfig(manifest=str(manifest), epochs=1, **FAST), "small")
    train(run, workspace)

    assert main(["evaluate", "--workspace", str(workspace), "small"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "95% Wilson interval over 6 test photos" in first, first
    assert main(["runs", "--workspace", str(workspace)]) == 0
    assert "95% Wilson interval over 6 test photos" in capsys.readouterr().out


def test_the_same_difference_on_every_seed_gets_no_p_value():
    # Accuracies move in steps of 1/2000: two seeds can differ by exactly the same amount,
    # which says nothing about how sure the difference is.
    result = paired_comparison([0.9685, 0.9695], [0.9630, 0.9640])
    assert result.p_value is None and not result.significant()
    text = comparison_text("feature_extraction", "feature_extraction_augmented", result)
    assert "the same +0.55 points on each of 2 seeds" in text and "run more seeds" in text
