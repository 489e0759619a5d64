"""Step 5: classify your own photos with a trained run."""

import plotly.graph_objects as go
import streamlit as st

from app_pages import _ui as ui
from transfer_core.errors import ImageError, TransferLabError
from transfer_core.images import open_rgb
from transfer_core.predict import Predictor
from transfer_core.runs import Run

st.title("Predict")
st.caption("Step 5 of 5 · upload photos (or take one) and see what the model thinks.")

candidates = ui.finished_runs()
if not candidates:
    ui.needs("No trained model yet.", "train", "Go to Train")
    st.stop()
run = ui.pick_run("Model", candidates, key="predict_run")


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def predictor(folder: str, model_mtime: int) -> Predictor:
    return Predictor(Run(folder))


try:
    model = predictor(str(run.folder), run.model_path.stat().st_mtime_ns)
except TransferLabError as exc:
    ui.show_error(exc)
    st.stop()

uploads = st.file_uploader("Photos", accept_multiple_files=True, key="photos",
                           help="JPEG, PNG, BMP, GIF or WebP, any size.")
if st.toggle("Use the camera", key="use_camera"):
    shot = st.camera_input("Take a photo")
    if shot is not None:
        uploads = list(uploads or []) + [shot]
if not uploads:
    st.info(f"Upload one or more photos. This model knows: {', '.join(model.classes)}.")
    st.stop()

files = [(upload.name, upload.getvalue()) for upload in uploads]
results = model.predict([data for _, data in files], [name for name, _ in files])
for index, ((name, data), result) in enumerate(zip(files, results)):
    left, right = st.columns([1, 2])
    if "error" in result:
        left.write(f"**{name}**")
        right.warning(f"Sorry, {result['error']}.",
                      icon=":material/warning:")
        continue
    try:
        left.image(open_rgb(data), caption=name, width=260)
    except ImageError:
        left.write(name)
    probabilities = result["probabilities"]
    labels = sorted(probabilities, key=probabilities.get)
    bars = go.Figure(go.Bar(x=[probabilities[c] for c in labels], y=labels, orientation="h",
                            text=[f"{100 * probabilities[c]:.1f}%" for c in labels],
                            textposition="auto"))
    bars.update_layout(xaxis=dict(range=[0, 1], tickformat=".0%"), height=80 + 40 * len(labels),
                       margin=dict(t=10, b=10, l=0, r=0))
    right.markdown(f"### {result['label']} · {100 * result['confidence']:.1f}%")
    right.plotly_chart(bars, key=f"bars_{index}_{name}")  # the same photo may come twice
