"""Step 6: take the model out — Keras, SavedModel and TFLite files that take raw photos, checked
against the app's own predictions, in one zip."""

from pathlib import Path

import streamlit as st

from app_pages import _ui as ui
from transfer_core.errors import TransferLabError, system_error
from transfer_core.export import FLOAT_FORMATS, FORMATS, INT8_TARGET, PARITY_IMAGES, export_run
from transfer_core.runs import Run

FORMAT_LABELS = {"keras": "Keras (.keras)", "savedmodel": "TensorFlow SavedModel",
                 "tflite": "TFLite (float)", "tflite-int8": "TFLite int8 (4× smaller)"}

st.title("Export")
st.caption("Step 6 · every exported model takes the photo's RGB pixels (0–255) at the model's "
           "size and applies its preprocessing itself; each file is loaded back and checked "
           f"against the app's predictions on up to {PARITY_IMAGES} test photos.")

run = ui.pick_run("Run", ui.finished_runs(), key="export_run")
if run is None:
    ui.needs("No finished run with a saved model yet.", "train", "Go to Train")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=4)
def cached_export(folder: str, model_mtime_ns: int, formats: tuple[str, ...]) -> dict:
    """One export per model file and choice of formats: a new model (mtime) exports again."""
    return export_run(Run(folder), list(formats))


formats = st.multiselect("Formats", FORMATS, default=list(FORMATS), key="export_formats",
                         format_func=FORMAT_LABELS.get)
if not formats:
    st.info("Choose at least one format.", icon=":material/info:")
    st.stop()
if not st.button("Export", type="primary", icon=":material/output:"):
    st.stop()

with st.spinner("Exporting and checking each file (the int8 conversion takes longest)…"):
    try:
        result = cached_export(str(run.folder), run.model_path.stat().st_mtime_ns, tuple(formats))
    except (TransferLabError, OSError) as exc:  # a parity failure, changed photos, a full disk
        ui.show_error(system_error(exc) if isinstance(exc, OSError) else exc)
        st.stop()

st.subheader("Parity with the app")
st.caption(result["parity_sample"] + ". A float file must agree on every photo (or the export "
           f"fails); int8 aims at {100 * INT8_TARGET:.0f}% or more.")
st.dataframe([{
    "format": FORMAT_LABELS[row["format"]],
    "label agreement": f"{100 * row['agreement']:.1f}%",
    "largest probability difference": f"{row['max_abs_probability_difference']:.1e}",
    "accuracy": f"{100 * row['accuracy']:.1f}%",
    "file size": f"{result['files'][row['format']]['bytes'] / 1e6:.1f} MB",
    "check": ("passed" if row["format"] in FLOAT_FORMATS or row["meets_target"]
              else "below target"),
} for row in result["parity"]], hide_index=True)

zip_path = Path(result["zip"])
if not zip_path.is_file():  # removed since the cached export: make it again
    cached_export.clear()
    st.warning("The export's zip is gone; press Export again.", icon=":material/warning:")
    st.stop()
st.download_button(f"Download {zip_path.name} ({result['zip_bytes'] / 1e6:.1f} MB)",
                   zip_path.read_bytes(), file_name=zip_path.name, mime="application/zip",
                   icon=":material/download:", type="primary")
top_level = sorted({name.split("/")[0] + "/" * ("/" in name) for name in result["contents"]})
st.caption("The zip holds " + ", ".join(f"`{name}`" for name in top_level) + ": README.md says "
           "how to classify a photo with each format.")
