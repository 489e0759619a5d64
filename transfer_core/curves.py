"""Learning curves of training runs: the chapter's smoothing and the Plotly figures.

Reads the epoch lines of a run's ``metrics.jsonl`` (see ``runs.py``) and draws training and
validation curves the way DLwP 5.3 does: raw values as dots, an exponential moving average as a
line, so the trend shows through the noise of small validation sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import plotly.colors
import plotly.graph_objects as go

from .history import _global_epoch, _is_number, best_epoch, epoch_records  # noqa: F401

__all__ = [
    "smooth_curve",
    "epoch_records",
    "best_epoch",
    "phase_boundaries",
    "curves_table",
    "curves_figure",
]

DEFAULT_FACTOR = 0.8

# Columns every table has, so a CSV keeps one shape whether or not a run had a validation split.
STANDARD_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

# Keys of an epoch line that describe the epoch rather than measure the model.
_NOT_METRICS = frozenset(
    {"type", "phase", "phase_name", "epoch", "global_epoch", "seconds", "time",
     "learning_rate", "lr"}
)

# Keras' "auto" mode: these metrics improve upwards, everything else (losses) downwards.


_SPLITS = (
    # (label, key prefix, marker symbol for raw points, dash for smoothed lines)
    ("training", "", "circle-open", "dot"),
    ("validation", "val_", "circle", "solid"),
)

_RUN_COLOURS = plotly.colors.qualitative.Plotly
ACCURACY_AXIS_TOP = 1.03  # room for a star at 100%, and no tick above it


def smooth_curve(points: Sequence[float | None],
                 factor: float = DEFAULT_FACTOR) -> list[float | None]:
    """The chapter's exponential moving average of a curve.

    The first point is kept as is, each later one becomes ``previous * factor + point *
    (1 - factor)`` (DLwP, 5.3, "Fine-tuning"). A missing value (None, NaN or infinite, e.g. an
    epoch without validation or a diverged loss) is passed through unchanged and the average
    carries on from the last real value, so one bad epoch does not poison the rest of the line.
    """
    factor = _check_factor(factor)
    smoothed: list[float | None] = []
    previous: float | None = None
    for point in points:
        if not _is_number(point):
            smoothed.append(point)
            continue
        previous = point if previous is None else previous * factor + point * (1 - factor)
        smoothed.append(previous)
    return smoothed


def phase_boundaries(records: Iterable[dict]) -> list[float]:
    """x positions (in global epochs) half-way between the last epoch of a phase and the next.

    For a fine-tune run with 10 head epochs this is ``[10.5]``.
    """
    return [x for x, _ in _phase_changes(epoch_records(records))]


def curves_table(runs: dict[str, list[dict]], factor: float = DEFAULT_FACTOR) -> list[dict]:
    """One row per run and epoch with every metric raw and smoothed, ready for a CSV download.

    Columns: run, phase, phase_name, epoch, global_epoch, then ``loss``, ``loss_smoothed``,
    ``accuracy``, ``accuracy_smoothed``, ``val_loss``, … (any other metric the runs logged
    follows). Smoothing restarts at each phase, as the figure's lines do.
    """
    factor = _check_factor(factor)
    epochs_by_run = {name: epoch_records(records) for name, records in _check_runs(runs).items()}
    metrics = _metric_columns(r for epochs in epochs_by_run.values() for r in epochs)
    rows = []
    for name, epochs in epochs_by_run.items():
        smoothed = {m: _smooth_by_phase(epochs, m, factor) for m in metrics}
        for i, record in enumerate(epochs):
            row = {
                "run": name,
                "phase": record.get("phase"),
                "phase_name": record.get("phase_name"),
                "epoch": record.get("epoch"),
                "global_epoch": record.get("global_epoch"),
            }
            for m in metrics:
                row[m] = record.get(m)
                row[f"{m}_smoothed"] = smoothed[m][i]
            rows.append(row)
    return rows


def curves_figure(
    runs: dict[str, list[dict]],
    metric: str = "accuracy",
    factor: float = DEFAULT_FACTOR,
    show_raw: bool = True,
    show_smoothed: bool = True,
    monitor: str = "val_loss",
    monitors: dict[str, str] | None = None,
) -> go.Figure:
    """Training and validation curves of one metric for one or several runs.

    ``runs`` maps a run's display name to its metrics records (progress lines are ignored).
    Each run gets one colour; training is drawn with open dots and a dotted line, validation
    with filled dots and a solid line. Raw values are dots (the chapter's ``'bo'``), smoothed
    values (``smooth_curve`` with ``factor``, restarted at each phase) are lines. The epoch
    ``monitor`` rates best (a run's own in ``monitors``, by name; "last": the last epoch, the
    one such a run keeps) is starred on the validation curve, and a dashed vertical line marks
    where fine-tuning starts. No colours or template are forced on the background, so the
    figure takes the theme of wherever it is shown (Streamlit's light or dark theme).
    """
    if not isinstance(metric, str) or not metric or metric.startswith("val_"):
        raise ValueError(
            f"metric must be a training metric name such as 'accuracy' or 'loss' (its "
            f"validation curve is drawn with it), got {metric!r}."
        )
    factor = _check_factor(factor)
    epochs_by_run = {name: epoch_records(records) for name, records in _check_runs(runs).items()}
    several = len(epochs_by_run) > 1
    percent = "acc" in metric

    fig = go.Figure()
    fig.update_layout(
        title={"text": f"Training and validation {metric}"},
        xaxis={"title": {"text": "epoch"}},
        yaxis={"title": {"text": metric}, "tickformat": ".0%" if percent else None,
               # Autorange pads past the points at 100% and showed a "110%" tick.
               "autorangeoptions": {"maxallowed": ACCURACY_AXIS_TOP} if percent else None},
        # Below the plot, in rows: long run names would otherwise squeeze the plot itself.
        legend={"groupclick": "toggleitem", "orientation": "h", "yanchor": "top", "y": -0.2,
                "xanchor": "left", "x": 0},
        hovermode="closest",
    )

    value_format = ".1%" if percent else ".4f"
    boundaries: dict[float, str] = {}
    for index, (name, epochs) in enumerate(epochs_by_run.items()):
        if not epochs:
            continue
        colour = _RUN_COLOURS[index % len(_RUN_COLOURS)]
        # One run: its name is already the page's heading; repeated in every legend entry it
        # only made the legend five long lines.
        shown_run = f"{name} · " if several else ""

        x = [_global_epoch(r) for r in epochs]
        phase_info = [[r.get("phase_name") or "", r.get("epoch")] for r in epochs]
        hover = (
            f"%{{fullData.name}}<br>epoch %{{x}} (%{{customdata[0]}} "
            f"epoch %{{customdata[1]}})<br>{metric}: %{{y:{value_format}}}<extra></extra>"
        )
        for split, prefix, symbol, dash in _SPLITS:
            key = prefix + metric
            raw = [_number_or_none(r.get(key)) for r in epochs]
            if all(v is None for v in raw):
                continue  # e.g. no validation split: no empty legend entries
            common = dict(
                x=x, customdata=phase_info, legendgroup=name, hovertemplate=hover,
            )
            if show_raw:
                fig.add_trace(go.Scatter(
                    y=raw,
                    mode="markers",
                    name=f"{shown_run}{split} · raw",
                    marker={"color": colour, "symbol": symbol, "size": 7},
                    opacity=0.5 if show_smoothed else 1.0,
                    **common,
                ))
            if show_smoothed:
                smooth = [_number_or_none(v) for v in _smooth_by_phase(epochs, key, factor)]
                fig.add_trace(go.Scatter(
                    y=smooth,
                    mode="lines",
                    name=f"{shown_run}{split} · smoothed",
                    line={"color": colour, "dash": dash, "width": 2},
                    **common,
                ))

        rule = (monitors or {}).get(name, monitor)
        best = best_epoch(epochs, rule)
        best_value = _number_or_none(best.get("val_" + metric)) if best else None
        if best_value is not None:
            best_x = _global_epoch(best)
            fig.add_trace(go.Scatter(
                x=[best_x],
                y=[best_value],
                mode="markers",
                name=f"{shown_run}{'kept' if rule == 'last' else 'best'} epoch",
                legendgroup=name,
                marker={"color": colour, "symbol": "star", "size": 16,
                        "line": {"width": 1, "color": "white"}},
                hovertemplate=(
                    f"{name}<br>{_rule_words(rule)}: %{{x}}<br>"
                    f"validation {metric}: %{{y:{value_format}}}<extra></extra>"
                ),
            ))
            label = f"last epoch {best_x} (kept)" if rule == "last" else f"best epoch {best_x}"
            fig.add_annotation(
                x=best_x, y=best_value,
                text=f"{name}: {label}" if several else label,
                showarrow=True, arrowhead=2, ax=0, ay=-35,
                font={"color": colour},
            )

        for x_boundary, next_phase in _phase_changes(epochs):
            boundaries.setdefault(x_boundary, next_phase)

    for x_boundary, next_phase in sorted(boundaries.items()):
        label = ("fine-tuning starts" if next_phase in ("fine_tune", None, "")
                 else f"{next_phase} starts")
        fig.add_vline(
            x=x_boundary,
            line={"dash": "dash", "color": "gray", "width": 1},
            annotation_text=label,
            annotation_position="top left",
            annotation_font_color="gray",
        )

    if not fig.data:
        if not any(epochs_by_run.values()):
            message = "No epochs finished yet"
        elif not (show_raw or show_smoothed):
            message = "Turn on raw points or smoothed lines to see the curves"
        else:
            message = f"No {metric} values in these runs"
        fig.add_annotation(
            text=message, xref="paper", yref="paper", x=0.5, y=0.5,
            showarrow=False, font={"size": 16},
        )
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    elif max(_global_epoch(r) for epochs in epochs_by_run.values() for r in epochs) <= 20:
        fig.update_xaxes(dtick=1)  # whole epochs only; auto ticks would show 2.5 on short runs
    return fig


def _check_factor(factor) -> float:
    try:
        ok = not isinstance(factor, bool) and 0 <= factor < 1
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"factor must be a number in [0, 1) (0 = no smoothing, the chapter uses 0.8), "
            f"got {factor!r}."
        )
    return float(factor)


def _check_runs(runs) -> dict[str, list[dict]]:
    if not isinstance(runs, dict):
        raise ValueError(
            f"runs must be a dict mapping a run's name to its records, got {type(runs).__name__}."
        )
    return runs


def _number_or_none(value) -> float | None:
    return value if _is_number(value) else None


def _phase_changes(epochs: list[dict]) -> list[tuple[float, str | None]]:
    """(x between the two epochs, name of the new phase) wherever the phase changes."""
    changes = []
    for previous, current in zip(epochs, epochs[1:]):
        if current.get("phase") != previous.get("phase"):
            x = (_global_epoch(previous) + _global_epoch(current)) / 2
            changes.append((x, current.get("phase_name")))
    return changes


def _smooth_by_phase(epochs: list[dict], key: str, factor: float) -> list[float | None]:
    # Each phase is its own training regime (other layers, other learning rate); the chapter
    # smooths the fine-tuning history on its own, so the jump at the boundary stays visible.
    smoothed: list[float | None] = []
    start = 0
    for end in range(1, len(epochs) + 1):
        if end == len(epochs) or epochs[end].get("phase") != epochs[start].get("phase"):
            smoothed += smooth_curve([r.get(key) for r in epochs[start:end]], factor)
            start = end
    return smoothed


def _metric_columns(epochs: Iterable[dict]) -> list[str]:
    extra = []
    for record in epochs:
        for key, value in record.items():
            if (key not in _NOT_METRICS and key not in STANDARD_METRICS and key not in extra
                    and (value is None or isinstance(value, (int, float)))
                    and not isinstance(value, bool)):
                extra.append(key)
    return list(STANDARD_METRICS) + extra


def _rule_words(rule: str) -> str:
    return "the last epoch, kept" if rule == "last" else f"best epoch by {rule}"
