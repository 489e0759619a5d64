"""Step 5: classify your own photos with a trained run."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageOps

from app_pages import _ui as ui
from transfer_core.errors import ImageError, TransferLabError, system_error
from transfer_core.explain import DEFAULT_OPACITY, overlay
from transfer_core.predict import Predictor
from transfer_core.runs import Run

st.title("Predict")
st.caption("Step 5 of 5 · upload photos (or take one) and see what the model thinks.")

ui.show_unusable_models()
candidates = ui.finished_runs()
if not candidates:
    ui.needs("No trained model yet.", "train", "Go to Train")
    st.stop()
run = ui.pick_run("Model", candidates, key="predict_run")


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def predictor(folder: str, model_mtime: int) -> Predictor:
    return Predictor(Run(folder))


def decoded(upload) -> tuple[str, Image.Image | None, np.ndarray | None, str | None]:
    """(name, the upright RGB photo, the model's input, why it is not one): decoded once for
    the thumbnail and the model (a JPEG once more, at training's scale: Predictor)."""
    try:
        photo, array = model.photo_and_input(upload.getvalue(), upload.name)
        return upload.name, photo, array, None
    except ImageError as exc:
        return upload.name, None, None, str(exc)


try:
    model = predictor(str(run.folder), run.model_path.stat().st_mtime_ns)
except (TransferLabError, OSError) as exc:  # a damaged or unsafe model.keras, a vanished run
    ui.show_error(system_error(exc) if isinstance(exc, OSError) else exc)
    st.stop()

if model.ood_stats is None and model.ood_problem is None:
    # Once per run: the statistics are saved in the run folder for every later visit.
    bar = st.progress(0.0, text="Measuring the training photos once, for the "
                                "'none of these' check…")
    model.prepare_ood(lambda done, total: bar.progress(
        done / total, text=f"Measuring the training photos once: {done} of {total}"))
    bar.empty()
if model.ood_problem:
    st.caption(model.ood_problem)

uploads = st.file_uploader("Photos", accept_multiple_files=True, key="photos",
                           help="JPEG, PNG, BMP, GIF or WebP, any size.")
if st.toggle("Use the camera", key="use_camera"):
    shot = st.camera_input("Take a photo")
    if shot is not None:
        uploads = list(uploads or []) + [shot]
if not uploads:
    st.info(f"Upload one or more photos. This model knows: {', '.join(model.classes)}.")
    st.stop()


def heatmaps(arrays: list[np.ndarray], ids: list[str], class_name: str | None) -> list:
    """Grad-CAM maps of the photos (explain.py), kept for this session: the slider and the
    class choice rerun the page, and the maps do not change with the opacity."""
    store = st.session_state.setdefault("gradcam", {})
    stamp = (str(run.folder), run.model_path.stat().st_mtime_ns, class_name)
    missing = [i for i, key in enumerate(ids) if (stamp, key) not in store]
    if missing:
        explainer = model.explainer()
        wanted = None if class_name is None else explainer.class_index(class_name)
        _, maps = explainer.heatmaps([arrays[i] for i in missing], wanted)
        store.update({(stamp, ids[i]): heat for i, heat in zip(missing, maps)})
    return [store[(stamp, key)] for key in ids]


photos = [decoded(upload) for upload in uploads]
good = [(name, array) for name, photo, array, _ in photos if photo is not None]
results = iter(model.predict([array for _, array in good], [name for name, _ in good]))
controls = st.columns(2)
opacity = controls[0].slider(
    "Heatmap opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key="heat_opacity",
    help="Grad-CAM: red where the model found the most evidence for the class, blue the "
         "least. 0 shows the photo alone.")
explained = None
if len(model.classes) > 2:
    choice = controls[1].selectbox("Heatmap for", ["the predicted class", *model.classes],
                                   key="heat_class")
    explained = None if choice == "the predicted class" else choice
ids = [f"{index}:{upload.file_id if hasattr(upload, 'file_id') else upload.name}"
       for index, upload in enumerate(uploads) if photos[index][1] is not None]
maps = iter(heatmaps([array for _, array in good], ids, explained) if good else [])
for index, (name, photo, _, error) in enumerate(photos):
    left, right = st.columns([1, 2])
    if photo is None:
        left.write(f"**{name}**")
        right.warning(f"Sorry, {error}.", icon=":material/warning:")
        continue
    result = next(results)
    # A copy at twice the shown width (sharp on a HiDPI screen): Streamlit encodes what it is
    # given, and a 60-megapixel photo would cost seconds and megabytes for a 260-pixel thumbnail.
    left.image(overlay(ImageOps.contain(photo, (520, 520)), next(maps), opacity),
               caption=name, width=260)
    probabilities = result["probabilities"]
    labels = sorted(probabilities, key=probabilities.get)
    bars = go.Figure(go.Bar(x=[probabilities[c] for c in labels], y=labels, orientation="h",
                            text=[f"{100 * probabilities[c]:.1f}%" for c in labels],
                            textposition="auto"))
    bars.update_layout(xaxis=dict(range=[0, 1], tickformat=".0%"), height=80 + 40 * len(labels),
                       margin=dict(t=10, b=10, l=0, r=0))
    if result.get("out_of_distribution"):
        right.warning(f"This does not look like any of: {', '.join(model.classes)} (score "
                      f"{result['ood_score']:.3f}; photos like the training ones stay under "
                      f"{result['ood_threshold']:.3f}).", icon=":material/help:")
    right.markdown(f"### {result['label']} · {100 * result['confidence']:.1f}%")
    right.plotly_chart(bars, key=f"bars_{index}_{name}")  # the same photo may come twice
