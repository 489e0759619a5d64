"""Step 4: the held-out test split — accuracy, loss, confusion matrix, the photos it got wrong."""

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from app_pages import _ui as ui
from transfer_core.baseline import baseline_lines
from transfer_core.errors import TransferLabError, system_error
from transfer_core.evaluation import current_evaluation, evaluate
from transfer_core.explain import gallery_overlays
from transfer_core.predict import Predictor
from transfer_core.runs import Run
from transfer_core.stats import accuracy_text

st.title("Evaluate")
st.caption("Step 4 of 5 · the test images were never used for training or for choosing the "
           "best epoch, so this is the honest score.")

ui.show_unusable_models()
run = ui.pick_run("Run", ui.finished_runs(), key="evaluate_run")
if run is None:
    ui.needs("No finished run with a saved model yet.", "train", "Go to Train")
    st.stop()

result = current_evaluation(run)  # None: none yet, or of an earlier model or another split
if result is None:
    st.write("This run has not been evaluated on the test split yet.")
    if not st.button("Evaluate on the test split", type="primary", icon=":material/fact_check:"):
        st.stop()
    bar = st.progress(0.0, text="Evaluating…")
    try:
        result = evaluate(run, progress=lambda done, total: bar.progress(
            done / total, text=f"Evaluating: {done} of {total} test images"))
    except (TransferLabError, OSError) as exc:  # files gone since the split, a damaged model
        ui.show_error(system_error(exc) if isinstance(exc, OSError) else exc)
        st.stop()
    st.rerun()  # evaluation.json is written: show it without the button and "not evaluated yet"



@st.cache_data(show_spinner="Drawing where the model looked…", max_entries=4)
def heat_gallery(folder: str, model_mtime: int, paths: tuple, predicted: tuple) -> list:
    return gallery_overlays(Predictor(Run(folder), ood=False), list(paths), list(predicted))


c1, c2, c3, c4 = st.columns(4)
c1.metric("Test accuracy", f"{100 * result['accuracy']:.1f}%")
c2.metric("Test loss", f"{result['loss']:.4f}")
c3.metric("Test images", result["images"])
if result.get("roc_auc") is not None:
    c4.metric("ROC AUC", f"{result['roc_auc']:.4f}")
if result.get("evaluated_on") == "validation":
    st.warning("Evaluated on the validation split, which also chose the best epoch: "
               "optimistic. The split folders have no test folder, and the split was saved to "
               "evaluate on validation; take part of the training folder as the test instead "
               "for an honest score.", icon=":material/warning:")
# A test split is a sample: say how far the true accuracy may lie from this one.
st.caption("Test accuracy " + accuracy_text(result["accuracy"], result["images"]) + ".")
for line in baseline_lines(result):  # does the dense head beat a plain linear model?
    st.caption(f":material/balance: {line}")

classes = result["classes"]
matrix = result["confusion_matrix"]
left, right = st.columns([3, 2])
heatmap = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Oranges",
                               text=matrix, texttemplate="%{text}", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
heatmap.update_layout(title="Confusion matrix", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", height=380, margin=dict(t=40, l=0, r=0, b=0))
left.plotly_chart(heatmap, key="confusion_matrix")
right.dataframe([{"class": c, "precision": f"{100 * m['precision']:.1f}%",
                  "recall": f"{100 * m['recall']:.1f}%", "F1": f"{100 * m['f1']:.1f}%",
                  "images": m["support"]} for c, m in result["per_class"].items()],
                hide_index=True)

mistakes = result["mistakes"]
st.subheader(f"The {len(mistakes)} test photos it got wrong" if mistakes else "No mistakes")
if mistakes:
    st.caption("Most confident mistakes first: these are the photos the model was surest about "
               "and still wrong.")
    shown = mistakes[:24]
    pictures = [m["path"] for m in shown]
    if st.toggle("Show where it looked (Grad-CAM)", value=True, key="evaluate_gradcam",
                 help="Red where the model found the most evidence for the class it wrongly "
                      "gave; blue the least."):
        try:
            pictures = heat_gallery(str(run.folder), run.model_path.stat().st_mtime_ns,
                                    tuple(m["path"] for m in shown),
                                    tuple(m["predicted"] for m in shown))
        except (TransferLabError, OSError) as exc:  # the photos alone, and why
            st.caption(f"No heatmaps: {system_error(exc) if isinstance(exc, OSError) else exc}")
    columns = st.columns(6)
    for i, mistake in enumerate(shown):
        with columns[i % 6]:
            picture = pictures[i]  # a path, or the photo with its heatmap, or None (gone)
            if picture is not None and (not isinstance(picture, str) or Path(picture).exists()):
                st.image(picture, width=150)
            st.caption(f"{Path(mistake['path']).name}: {mistake['true']} → "
                       f"**{mistake['predicted']}** ({100 * mistake['confidence']:.0f}%)")
    if len(mistakes) > len(shown):
        st.caption(f"… and {len(mistakes) - len(shown)} more.")
