"""How many augmented views a view bank holds: `view_bank="auto"` picks it from the epochs.

A bank of K views read for E epochs shows each view about E / K times. With K = 3 at the
chapter's 30 (+ 100) epochs the head learnt the bank by heart (issue 15), so "auto" aims at
about three readings of each view, within the disk the cache may use. Pure functions: the
caller measures the free space (training.py, the Train page).
"""

from __future__ import annotations

import math

from .features import view_bank_bytes

# Each view is read about this many times over the run.
READS_PER_VIEW = 3
MIN_VIEWS, MAX_VIEWS = 3, 30


def bank_boundary(strategy: str, fine_tune_from: str | None,
                  fine_tune_on_bank: bool) -> str | None:
    """The fine-tuning boundary when fine_tune's second phase trains on the bank
    (TrainConfig.fine_tune_on_bank): the bank is then cut just below it. None otherwise: the
    bank holds the base's outputs, which only the head reads."""
    return fine_tune_from if strategy == "fine_tune" and fine_tune_on_bank else None


def bank_epochs(strategy: str, epochs: int, fine_tune_epochs: int,
                fine_tune_on_bank: bool = False) -> int:
    """The epochs that read the bank: the head's, and fine_tune's second phase only when it
    trains on the bank too (bank_boundary); 0 for a strategy without one."""
    if strategy == "feature_extraction_augmented":
        return epochs
    if strategy == "fine_tune":
        return epochs + (fine_tune_epochs if fine_tune_on_bank else 0)
    return 0


def choose_views(config, bytes_per_view: float, free_bytes: float) -> tuple[int, str]:
    """(K, why) for `config` (a TrainConfig, or anything with its strategy, epochs,
    fine_tune_epochs, fine_tune_on_bank and view_bank). A fixed view_bank is kept as given.
    "auto" takes ceil(E / 3) views for the E epochs that read the bank, clipped to [3, 30],
    and fewer (never below 3) when the bank would not fit: `bytes_per_view` is what one more
    view adds to the cache, `free_bytes` what the bank's views may take
    (features.room_for_features, less the parts that do not grow with K)."""
    if config.view_bank != "auto":
        return config.view_bank, "set in the run's settings"
    return automatic_views(config.strategy, config.epochs, config.fine_tune_epochs,
                           bytes_per_view, free_bytes, config.fine_tune_on_bank)


def automatic_views(strategy: str, epochs: int, fine_tune_epochs: int,
                    bytes_per_view: float = 0, free_bytes: float = 0,
                    fine_tune_on_bank: bool = False) -> tuple[int, str]:
    """(K, why) that "auto" takes for a run of `strategy` (choose_views); with no
    `bytes_per_view`, whatever the disk (a time estimate)."""
    reading = bank_epochs(strategy, epochs, fine_tune_epochs, fine_tune_on_bank)
    if not reading:
        return 0, f"{strategy} reads no view bank"
    wanted = min(max(math.ceil(reading / READS_PER_VIEW), MIN_VIEWS), MAX_VIEWS)
    seen = round(reading / wanted)
    why = (f"automatic: {reading} epochs read the bank, so {wanted} views, each seen "
           + ("about once" if seen <= 1 else f"about {seen} times"))
    if bytes_per_view <= 0 or wanted * bytes_per_view <= free_bytes:
        return wanted, why
    views = max(int(free_bytes // bytes_per_view), MIN_VIEWS)
    return views, (f"automatic: {reading} epochs would take {wanted} views, but "
                   f"{_gb(wanted * bytes_per_view)} do not fit in the "
                   f"{_gb(max(free_bytes, 0))} the cache may use, so {views}")


def bank_growth(layer_shapes: dict, cut: str | None, output: str, n_train: int,
                n_val: int) -> tuple[int, int]:
    """(bytes one more view adds to the cache, bytes that do not grow with the views), for a
    bank cut as features.view_bank_bytes describes."""
    one, two = (sum(view_bank_bytes(layer_shapes, cut, output, views, n_train, n_val).values())
                for views in (1, 2))
    return two - one, 2 * one - two


def _gb(size: float) -> str:
    return f"{size / 2**30:.1f} GB"
