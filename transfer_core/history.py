"""A run's metrics history: its end-of-epoch lines and the best of them.

Shared by the run folder (summaries), training (which model to keep) and the curves. No
Plotly and no TensorFlow here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall")


def epoch_records(records: Iterable[dict]) -> list[dict]:
    """The end-of-epoch lines of a metrics log, in training order (per-batch lines dropped)."""
    epochs = [r for r in records if isinstance(r, dict) and r.get("type") == "epoch"]
    return sorted(epochs, key=_global_epoch)


def best_epoch(records: Iterable[dict], monitor: str = "val_loss") -> dict | None:
    """The epoch line with the best ``monitor`` value, or None if no epoch has one.

    Lowest wins for losses, highest for accuracy-like metrics, as in Keras' ModelCheckpoint
    with ``mode="auto"``; on a tie the earlier epoch wins, as a checkpoint would have kept it.
    ``monitor="last"`` is the rule that keeps the last epoch, whatever its scores.
    """
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}.")
    if monitor == "last":
        epochs = epoch_records(records)
        return epochs[-1] if epochs else None
    sign = -1.0 if _higher_is_better(monitor) else 1.0
    best, best_score = None, math.inf
    for record in epoch_records(records):
        value = record.get(monitor)
        if _is_number(value) and sign * value < best_score:
            best, best_score = record, sign * value
    return best


def is_better(value: float, best: float, monitor: str) -> bool:
    """Whether `value` of `monitor` beats `best`, by the same rule as best_epoch."""
    return value > best if _higher_is_better(monitor) else value < best


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _global_epoch(record: dict) -> float:
    value = record.get("global_epoch", record.get("epoch"))
    return value if _is_number(value) else math.inf


def _higher_is_better(name: str) -> bool:
    return any(part in name for part in _HIGHER_IS_BETTER)
