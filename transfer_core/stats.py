"""How sure a score is: intervals for one accuracy and for a mean over seeds, and a test of
whether one strategy beats another.

One run's test accuracy is a proportion of photos, so its interval is Wilson's score interval
(good near 100% and for small test sets, where the normal approximation leaves [0, 1]). A
strategy run with several seeds gives one accuracy per seed: their mean gets Student's t
interval, and two strategies run with the same seeds on the same test split are compared with
a paired t-test over the seeds (Dietterich 1998 compares variants of it), since each seed's
pair shares the test photos and the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy

CONFIDENCE = 0.95


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE
                    ) -> tuple[float, float]:
    """The Wilson score interval of `correct` out of `total` (E. B. Wilson, 1927)."""
    if total <= 0:
        return 0.0, 1.0
    z = _scipy.norm.ppf(0.5 + confidence / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # At 0 or all correct the bound is exactly 0 or 1; rounding would leave 0.9999999999999999.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return low, high


def accuracy_text(accuracy: float, total: int, confidence: float = CONFIDENCE) -> str:
    """"97.4% (96.6–98.0, 95% Wilson interval over 2,000 test photos)"."""
    low, high = wilson_interval(round(accuracy * total), total, confidence)
    return (f"{100 * accuracy:.1f}% ({100 * low:.1f}–{100 * high:.1f}, "
            f"{100 * confidence:.0f}% Wilson interval over {total:,} test photos)")


@dataclass(frozen=True)
class MeanInterval:
    mean: float
    low: float
    high: float
    n: int

    def text(self, scale: float = 100, unit: str = "%") -> str:
        if self.n < 2:
            return f"{scale * self.mean:.1f}{unit} (one seed: no interval)"
        return (f"{scale * self.mean:.1f}{unit} ({scale * self.low:.1f}–{scale * self.high:.1f}, "
                f"{100 * CONFIDENCE:.0f}% t interval over {self.n} seeds)")


def mean_interval(values, confidence: float = CONFIDENCE) -> MeanInterval:
    """The mean of `values` with its Student's t interval (none for a single value)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return MeanInterval(mean, mean, mean, len(values))
    half = (_scipy.t.ppf(0.5 + confidence / 2, len(values) - 1)
            * values.std(ddof=1) / math.sqrt(len(values)))
    return MeanInterval(mean, mean - half, mean + half, len(values))


@dataclass(frozen=True)
class Comparison:
    """a − b over paired seeds: the mean difference, its t interval, the paired t-test's p."""

    difference: MeanInterval
    p_value: float | None

    def significant(self, alpha: float = 1 - CONFIDENCE) -> bool:
        return self.p_value is not None and self.p_value < alpha


def paired_comparison(a, b, confidence: float = CONFIDENCE) -> Comparison:
    """Compare accuracies `a` and `b`, one pair per seed (same seeds, same test split)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a paired test needs one pair per seed; got {len(a)} and {len(b)}")
    difference = mean_interval(a - b, confidence)
    if len(a) < 2:
        return Comparison(difference, None)
    if np.allclose(a - b, (a - b)[0]):  # no spread: t is infinite or undefined, no test
        return Comparison(difference, None)
    return Comparison(difference, float(_scipy.ttest_rel(a, b).pvalue))


def comparison_text(name_a: str, name_b: str, comparison: Comparison) -> str:
    """Plain words: "fine_tune beat feature_extraction by 0.9 points (0.4 to 1.4), p = 0.01"."""
    d = comparison.difference
    if comparison.p_value is None and d.n < 2:
        return f"{name_a} against {name_b}: one seed each, so no test can tell them apart."
    if comparison.p_value is None:
        return (f"{name_a} and {name_b} differ by the same {100 * d.mean:+.2f} points on each "
                f"of {d.n} seeds: with no spread a t-test cannot say how sure that is; run "
                "more seeds.")
    if not comparison.significant():
        return (f"{name_a} is not distinguishable from {name_b} with {d.n} seeds "
                f"(difference {100 * d.mean:+.1f} points, {100 * d.low:+.1f} to "
                f"{100 * d.high:+.1f}; p = {comparison.p_value:.2f}).")
    winner, loser, sign = (name_a, name_b, 1) if d.mean > 0 else (name_b, name_a, -1)
    low, high = sorted((sign * d.low, sign * d.high))
    return (f"{winner} beat {loser} by {100 * abs(d.mean):.1f} points ({100 * low:.1f} to "
            f"{100 * high:.1f}), p = {comparison.p_value:.2g}.")
