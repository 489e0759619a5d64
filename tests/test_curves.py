"""Learning curves: the chapter's smoothing, the epoch bookkeeping, the figure and the table."""

import math

import pytest

from transfer_core.curves import (
    best_epoch,
    curves_figure,
    curves_table,
    epoch_records,
    phase_boundaries,
    smooth_curve,
)


def epoch(global_epoch, phase=1, epoch_in_phase=None, **metrics):
    record = {
        "type": "epoch",
        "phase": phase,
        "phase_name": "head" if phase == 1 else "fine_tune",
        "epoch": epoch_in_phase or global_epoch,
        "global_epoch": global_epoch,
        "seconds": 1.0,
        "time": 1764270000.0 + global_epoch,
    }
    record.update(metrics)
    return record


def progress(global_epoch, batch):
    return {"type": "progress", "global_epoch": global_epoch, "batch": batch, "loss": 9.9,
            "accuracy": 0.01}


def fine_tune_run():
    """3 head epochs then 2 fine-tune epochs; val_loss is best at epoch 4, val_accuracy at 5,
    written out of order and with per-batch progress lines mixed in, as a log can be."""
    rows = [
        (1, 1, 1, 0.90, 0.50, 0.80, 0.60),
        (2, 1, 2, 0.70, 0.60, 0.60, 0.70),
        (3, 1, 3, 0.60, 0.70, 0.55, 0.72),
        (4, 2, 1, 0.40, 0.80, 0.30, 0.85),
        (5, 2, 2, 0.30, 0.90, 0.35, 0.90),
    ]
    records = [
        epoch(g, phase, e, loss=loss, accuracy=acc, val_loss=vloss, val_accuracy=vacc)
        for g, phase, e, loss, acc, vloss, vacc in rows
    ]
    return [progress(1, 1), records[4], records[0], progress(2, 3), records[2], records[1],
            records[3], progress(5, 7)]


def head_only_run(n=4):
    return [
        epoch(g, loss=1.0 / g, accuracy=0.5 + g / 20, val_loss=1.2 / g, val_accuracy=0.45 + g / 20)
        for g in range(1, n + 1)
    ]


def data_traces(fig):
    return [t for t in fig.data if not t.name.endswith(("best epoch", "kept epoch"))]


# --- smooth_curve ------------------------------------------------------------------------------

def test_smoothing_matches_the_chapter_by_hand():
    assert smooth_curve([1, 0, 0], factor=0.8) == pytest.approx([1, 0.8, 0.64])
    # 2; 2*.5 + 4*.5 = 3; 3*.5 + 6*.5 = 4.5
    assert smooth_curve([2, 4, 6], factor=0.5) == pytest.approx([2, 3, 4.5])


def test_default_factor_is_the_chapters_0_8():
    assert smooth_curve([1, 0, 0]) == pytest.approx([1, 0.8, 0.64])


def test_factor_zero_leaves_the_curve_alone():
    assert smooth_curve([0.3, 0.9, 0.1], factor=0) == [0.3, 0.9, 0.1]


@pytest.mark.parametrize("factor", [1, 1.5, -0.1, float("nan"), "0.8", None])
def test_factor_outside_0_1_is_refused_by_name(factor):
    with pytest.raises(ValueError, match="factor"):
        smooth_curve([1, 2, 3], factor=factor)


def test_missing_values_pass_through_and_the_average_carries_on():
    assert smooth_curve([1, None, 0]) == [1, None, pytest.approx(0.8)]
    out = smooth_curve([1, float("nan"), 0])
    assert out[0] == 1 and math.isnan(out[1]) and out[2] == pytest.approx(0.8)
    # the first real value starts the average
    assert smooth_curve([None, 2, 0], factor=0.5) == [None, 2, pytest.approx(1.0)]
    assert smooth_curve([]) == []


# --- epoch bookkeeping ----------------------------------------------------------------------

def test_epoch_records_drop_progress_lines_and_sort_by_global_epoch():
    epochs = epoch_records(fine_tune_run())
    assert [r["global_epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    assert all(r["type"] == "epoch" for r in epochs)


def test_best_epoch_is_lowest_loss_but_highest_accuracy():
    records = fine_tune_run()
    assert best_epoch(records)["global_epoch"] == 4  # default monitor: val_loss, lowest
    assert best_epoch(records, monitor="val_accuracy")["global_epoch"] == 5  # highest
    assert best_epoch(records, monitor="loss")["global_epoch"] == 5


def test_best_epoch_is_none_without_values_and_earliest_on_a_tie():
    no_validation = [epoch(1, loss=0.5, accuracy=0.7), epoch(2, loss=0.4, accuracy=0.8)]
    assert best_epoch(no_validation) is None
    assert best_epoch([progress(1, 1)]) is None
    tie = [epoch(1, val_loss=0.3), epoch(2, val_loss=0.3), epoch(3, val_loss=None)]
    assert best_epoch(tie)["global_epoch"] == 1


def test_phase_boundary_lies_between_last_head_and_first_fine_tune_epoch():
    assert phase_boundaries(fine_tune_run()) == [3.5]
    assert phase_boundaries(head_only_run()) == []
    ten_and_five = [epoch(g, phase=1 if g <= 10 else 2) for g in range(1, 16)]
    assert phase_boundaries(ten_and_five) == [10.5]


# --- the figure ----------------------------------------------------------------------------

def test_one_run_has_raw_dots_smoothed_lines_and_a_best_star_named_without_the_run():
    fig = curves_figure({"vgg16-ft": fine_tune_run()})
    names = [t.name for t in fig.data]
    assert sorted(names) == sorted([
        "training · raw",
        "training · smoothed",
        "validation · raw",
        "validation · smoothed",
        "best epoch",
    ])
    by_name = {t.name: t for t in fig.data}
    assert by_name["validation · raw"].mode == "markers"
    assert by_name["validation · smoothed"].mode == "lines"
    assert list(by_name["validation · raw"].x) == [1, 2, 3, 4, 5]
    assert list(by_name["validation · raw"].y) == [0.60, 0.70, 0.72, 0.85, 0.90]
    assert fig.layout.title.text == "Training and validation accuracy"
    assert fig.layout.xaxis.title.text == "epoch"
    assert fig.layout.yaxis.title.text == "accuracy"
    assert fig.layout.yaxis.tickformat.endswith("%")
    # an accuracy axis stops just above 100% (autorange had shown a "110%" tick)
    assert 1.0 < fig.layout.yaxis.autorangeoptions.maxallowed <= 1.05


def test_training_and_validation_share_the_run_colour_but_not_the_line_style():
    fig = curves_figure({"run": fine_tune_run()})
    by_name = {t.name: t for t in fig.data}
    train, val = by_name["training · smoothed"], by_name["validation · smoothed"]
    assert train.line.color == val.line.color
    assert train.line.dash != val.line.dash
    assert (by_name["training · raw"].marker.symbol
            != by_name["validation · raw"].marker.symbol)


def test_smoothed_line_restarts_when_fine_tuning_starts():
    fig = curves_figure({"run": fine_tune_run()}, metric="loss", factor=0.5)
    line = next(t for t in fig.data if t.name == "training · smoothed")
    head = smooth_curve([0.90, 0.70, 0.60], 0.5)
    fine = smooth_curve([0.40, 0.30], 0.5)
    assert list(line.y) == pytest.approx(head + fine)
    assert fig.layout.title.text == "Training and validation loss"
    assert not (fig.layout.yaxis.tickformat or "").endswith("%")
    assert fig.layout.yaxis.autorangeoptions.maxallowed is None  # a loss has no ceiling


def test_two_runs_get_their_own_traces_and_colours():
    fig = curves_figure({"a": fine_tune_run(), "b": head_only_run()})
    assert len(data_traces(fig)) == 8
    best = {t.name for t in fig.data if "best epoch" in t.name}
    assert best == {"a · best epoch", "b · best epoch"}
    colour = {t.name.split(" · ")[0]: t.line.color or t.marker.color for t in data_traces(fig)}
    assert colour["a"] != colour["b"]
    for run in ("a", "b"):
        colours = {(t.line.color if t.mode == "lines" else t.marker.color)
                   for t in fig.data if t.name.startswith(run + " · ")}
        assert len(colours) == 1


def test_phase_boundary_is_a_dashed_vertical_line_labelled_fine_tuning():
    fig = curves_figure({"run": fine_tune_run()})
    lines = [s for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]
    assert [s.x0 for s in lines] == [3.5]
    assert lines[0].line.dash == "dash"
    assert any(a.text == "fine-tuning starts" and a.x == 3.5 for a in fig.layout.annotations)
    assert not curves_figure({"run": head_only_run()}).layout.shapes


def test_best_epoch_by_val_loss_is_starred_on_the_validation_curve():
    fig = curves_figure({"run": fine_tune_run()}, metric="accuracy")
    star = next(t for t in fig.data if t.name == "best epoch")
    assert star.marker.symbol == "star"
    # val_loss is lowest at epoch 4, even though val_accuracy peaks at 5
    assert list(star.x) == [4] and list(star.y) == [0.85]
    assert any("epoch 4" in a.text and a.x == 4 for a in fig.layout.annotations)


def test_raw_only_and_smoothed_only_switch_trace_sets():
    raw_only = data_traces(curves_figure({"run": fine_tune_run()}, show_smoothed=False))
    assert {t.mode for t in raw_only} == {"markers"}
    assert all(t.name.endswith("raw") for t in raw_only) and len(raw_only) == 2

    smoothed_only = data_traces(curves_figure({"run": fine_tune_run()}, show_raw=False))
    assert {t.mode for t in smoothed_only} == {"lines"}
    assert all(t.name.endswith("smoothed") for t in smoothed_only) and len(smoothed_only) == 2


def test_run_without_validation_split_has_no_empty_validation_traces():
    records = [epoch(1, loss=0.5, accuracy=0.7), epoch(2, loss=0.4, accuracy=0.8)]
    fig = curves_figure({"run": records})
    assert [t.name for t in fig.data] == ["training · raw", "training · smoothed"]


@pytest.mark.parametrize("runs", [{}, {"run": []}, {"run": [progress(1, 1), progress(1, 2)]}])
def test_no_epochs_yet_gives_a_message_not_an_exception(runs):
    fig = curves_figure(runs)
    assert len(fig.data) == 0
    assert [a.text for a in fig.layout.annotations] == ["No epochs finished yet"]


def test_a_run_still_waiting_for_its_first_epoch_does_not_hide_the_others():
    fig = curves_figure({"done": head_only_run(), "starting": [progress(1, 1)]})
    assert {t.name.split(" · ")[0] for t in fig.data} == {"done"}


def test_bad_metric_or_factor_is_refused_by_name():
    with pytest.raises(ValueError, match="metric"):
        curves_figure({"run": fine_tune_run()}, metric="val_accuracy")
    with pytest.raises(ValueError, match="factor"):
        curves_figure({"run": fine_tune_run()}, factor=1.0)


def test_figure_serialises_for_the_browser():
    fig = curves_figure({"run": fine_tune_run(), "other": head_only_run()})
    assert '"fine-tuning starts"' in fig.to_json()


# --- the CSV table ------------------------------------------------------------------------

def test_table_has_a_row_per_run_and_epoch_with_raw_and_smoothed_metrics():
    rows = curves_table({"ft": fine_tune_run(), "head": head_only_run(2)}, factor=0.5)
    assert [(r["run"], r["global_epoch"]) for r in rows] == [
        ("ft", 1), ("ft", 2), ("ft", 3), ("ft", 4), ("ft", 5), ("head", 1), ("head", 2)
    ]
    first = rows[0]
    assert list(first)[:5] == ["run", "phase", "phase_name", "epoch", "global_epoch"]
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert metric in first and f"{metric}_smoothed" in first
    assert all(set(r) == set(first) for r in rows)

    fourth = rows[3]
    assert (fourth["phase"], fourth["phase_name"], fourth["epoch"]) == (2, "fine_tune", 1)
    assert rows[1]["loss"] == 0.70 and rows[1]["loss_smoothed"] == pytest.approx(0.80)
    assert rows[2]["loss_smoothed"] == pytest.approx(0.70)
    # smoothing restarts with the fine-tuning phase, like the figure's lines
    assert fourth["loss_smoothed"] == pytest.approx(0.40)
    assert rows[4]["loss_smoothed"] == pytest.approx(0.35)


def test_table_keeps_its_columns_when_there_is_no_validation():
    rows = curves_table({"run": [epoch(1, loss=0.5, accuracy=0.7)]})
    assert rows[0]["val_loss"] is None and rows[0]["val_accuracy_smoothed"] is None
    assert rows[0]["accuracy_smoothed"] == 0.7
    assert curves_table({"run": [progress(1, 1)]}) == []


def test_a_run_that_keeps_its_last_epoch_is_starred_there_though_val_loss_rose():
    fig = curves_figure({"last": fine_tune_run(), "best": fine_tune_run()}, metric="loss",
                        monitors={"last": "last", "best": "val_loss"})
    stars = {t.name: list(t.x) for t in fig.data if t.name.endswith(("best epoch", "kept epoch"))}
    assert stars == {"last · kept epoch": [5], "best · best epoch": [4]}
    assert any(a.text == "last: last epoch 5 (kept)" for a in fig.layout.annotations)
    assert best_epoch(fine_tune_run(), monitor="last")["global_epoch"] == 5
