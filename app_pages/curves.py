"""Step 3: the learning curves, raw and smoothed as in the chapter, for one run or several."""

import csv
import io

import streamlit as st

from app_pages import _ui as ui
from transfer_core.curves import best_epoch, curves_figure, curves_table
from transfer_core.recommend import range_test_figure, recommendation_lines

st.title("Curves")
st.caption("Step 3 of 5 · training against validation. Where validation stops improving while "
           "training keeps going, the model has started to overfit.")

# A damaged run is named in the sidebar; its curves are not drawn.
with_epochs = [r for r in ui.runs() if not r.problem() and r.epochs()]
if not with_epochs:
    ui.needs("No run has finished an epoch yet.", "train", "Go to Train")
    st.stop()

current = ui.current_run()
names = [r.name for r in with_epochs]
default = [current.name] if current and current.name in names else names[:1]
chosen = st.multiselect("Runs", names, default=default, key="curve_runs",
                        format_func=lambda n: ui.run_label(next(r for r in with_epochs
                                                                if r.name == n)))
if not chosen:
    st.info("Pick at least one run.")
    st.stop()

c1, c2, c3 = st.columns([2, 1, 1])
factor = c1.slider("Smoothing factor", 0.0, 0.95, 0.8, 0.05, key="smoothing",
                   help="The chapter's exponential moving average: each point becomes "
                        "factor × previous + (1 − factor) × point. 0 turns smoothing off.")
raw = c2.toggle("Raw points", value=True, key="show_raw")
smoothed = c3.toggle("Smoothed lines", value=True, key="show_smoothed")
if not (raw or smoothed):
    # The figures would show only the best-epoch star: say why the curves are gone.
    st.info("Turn on raw points or smoothed lines to see the curves.", icon=":material/info:")

by_name = {r.name: r for r in with_epochs}
records = {name: by_name[name].epochs() for name in chosen}


@st.cache_data(show_spinner=False, max_entries=64)
def figure(records_json: dict, metric: str, factor: float, raw: bool, smoothed: bool,
           monitors: dict):
    return curves_figure(records_json, metric, factor, raw, smoothed, monitors=monitors)


monitors = {name: by_name[name].config.monitor for name in records}


left, right = st.columns(2)
left.plotly_chart(figure(records, "accuracy", factor, raw, smoothed, monitors),
                  key="accuracy_chart")
right.plotly_chart(figure(records, "loss", factor, raw, smoothed, monitors), key="loss_chart")



def kept_caption(run, rows) -> str | None:
    """Which epoch's model the run kept: the best by its monitor among the epochs whose model
    was saved (an interrupted run's last epoch may have scored better, unsaved)."""
    monitor = run.config.monitor
    kept, best = run.kept_epoch(), best_epoch(rows, monitor)
    if kept is not None and monitor == "last":
        scores = (f" (validation accuracy {100 * kept['val_accuracy']:.1f}%, loss "
                  f"{kept['val_loss']:.4f})" if kept.get("val_loss") is not None else "")
        return (f"{run.name}: epoch {kept['global_epoch']}{scores}, the last "
                "saved: the run keeps the last epoch's model, as the chapter does.")
    if kept is None or kept.get(monitor) is None:  # no validation split: no best to name
        return None
    text = (f"{run.name}: best epoch {kept['global_epoch']} (validation accuracy "
            f"{100 * (kept.get('val_accuracy') or 0):.1f}%, loss {kept.get('val_loss') or 0:.4f})"
            " — its model is the one saved.")
    if best and best["global_epoch"] != kept["global_epoch"]:
        text += (f" Epoch {best['global_epoch']} scored better, but its model was not saved "
                 f"(the run is {run.status().get('state')}).")
    return text


for name, rows in records.items():
    caption = kept_caption(by_name[name], rows)
    if caption:
        st.caption(caption)
    tested = ui.test_accuracy_text(by_name[name])
    if tested:
        st.caption(f"{name} on the test split: {tested}.")
    for warning in by_name[name].warnings():
        st.caption(f":material/warning: {name}: {warning}")
    searched = by_name[name].config.recommendation
    if searched:  # "Recommended for this dataset": what it measured before training
        with st.expander(f"{name}: how the recommended settings were found"):
            st.plotly_chart(range_test_figure(searched), key=f"range_test_{name}")
            for line in recommendation_lines(searched):
                st.caption(line)

table = curves_table(records, factor)
buffer = io.StringIO()
writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
writer.writeheader()
writer.writerows(table)
st.download_button("Download the numbers (CSV)", buffer.getvalue(), "curves.csv", "text/csv",
                   icon=":material/download:")
