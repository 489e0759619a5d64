"""Step 1: choose the images, check every one by decoding it, split into train/validation/test."""

from pathlib import Path

import plotly.express as px
import streamlit as st

from app_pages import _ui as ui
from transfer_core import config, sources
from transfer_core.datasets import PRESETS, SPLITS, SplitRequest, split
from transfer_core.errors import TransferLabError
from transfer_core.images import open_rgb

st.title("Dataset")
st.caption("Step 1 of 5 · choose your images; every file is checked by decoding it, then split "
           "into training, validation and test sets.")

SOURCES = ["Demo set", "Folder on this server", "Upload a zip", "Download Dogs vs Cats"]


def choose_folder() -> str | None:
    source = st.radio("Where are the images?", SOURCES, horizontal=True, key="source",
                      index=1 if config.default_data_dir() else 0)
    if source == "Demo set":
        demo_source()
    elif source == "Folder on this server":
        folder_source()
    elif source == "Upload a zip":
        zip_source()
    else:
        download_source()
    return st.session_state.get("data_folder")


def demo_source():
    st.write("A small synthetic set — sunsets, forests and oceans, 60 pictures each — made on "
             "this machine in a second. No download; ideal for a one-minute tour.")
    if st.button("Create the demo set", icon=":material/auto_awesome:"):
        folder = sources.make_demo_dataset(config.datasets_dir(ui.workspace()) / "demo")
        st.session_state["data_folder"] = str(folder)


def folder_source():
    default = config.default_data_dir()
    path = st.text_input("Folder on the server", value=str(default) if default else "",
                         placeholder="/data/dogs-vs-cats",
                         help="One sub-folder per class (cats/, dogs/ …) or Kaggle names "
                              "(cat.1.jpg, dog.1.jpg). Only folders under the configured roots "
                              "can be opened.")
    if st.button("Use this folder", icon=":material/folder_open:") and path:
        st.session_state.pop("data_folder", None)  # not the images of an earlier choice
        roots = config.allowed_roots(ui.workspace())
        try:
            folder = config.folder_path(path)
        except TransferLabError as exc:  # a NUL byte, too long: no file system takes it
            ui.show_error(exc)
            return
        if not config.is_allowed(folder, roots):
            st.error(f"{path} is outside the folders this app may read "
                     f"({', '.join(map(str, roots))}). Set TRANSFER_LAB_ROOTS to allow it.")
        elif not _is_folder(folder):
            st.error(f"There is no folder {path} on the server.")
        else:
            st.session_state["data_folder"] = str(folder)


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. no permission to look: as good as absent for the app
        return False


def zip_source():
    upload = st.file_uploader("Zip of images", type=["zip"],
                              help="One sub-folder per class, or Kaggle names like cat.1.jpg. "
                                   "The same zip uploaded again reuses its folder.")
    if upload is None:
        return
    unpacked = st.session_state.setdefault("unpacked", {})
    known = unpacked.get(upload.file_id)
    if not (known and Path(known).is_dir()):
        with st.spinner(f"Unpacking {upload.name} and checking every image…"):
            try:
                # A zip whose images cannot be used (one class, none) is removed again.
                unpacked[upload.file_id] = str(sources.unpack_upload(
                    upload, ui.workspace(), check=lambda folder: ui.scan_folder(str(folder))))
            except TransferLabError as exc:
                ui.show_error(exc)
                st.session_state.pop("data_folder", None)  # not the images of an earlier choice
                return
    st.session_state["data_folder"] = unpacked[upload.file_id]


def download_source():
    st.write("The Kaggle **Dogs vs Cats** photos (Microsoft's `kagglecatsanddogs_5340.zip`, "
             "786 MB, about 25,000 photos; for non-commercial research only). An interrupted "
             "download resumes where it stopped. About 1,600 files in it are corrupt or not "
             "JPEG: the check below finds them by decoding every file.")
    if st.button("Download and unpack", icon=":material/download:"):
        bar = st.progress(0.0, text="Connecting…")

        def progress(done, total):
            share = done / total if total else 0.0
            bar.progress(min(share, 1.0), text=f"{done / 2**20:.0f} of "
                         f"{total / 2**20:.0f} MB" if total else f"{done / 2**20:.0f} MB")

        try:
            folder = sources.prepare_dogs_vs_cats(ui.workspace(), progress=progress)
        except TransferLabError as exc:
            ui.show_error(exc)
            st.session_state.pop("data_folder", None)  # not the images of an earlier choice
            return
        st.session_state["data_folder"] = str(folder)


def show_scan(report):
    st.subheader("What is in it")
    counts, skipped = report.counts(), report.skipped_counts()
    columns = st.columns(min(len(counts), 6))
    for i, (name, count) in enumerate(counts.items()):
        columns[i % len(columns)].metric(name, f"{count} usable",
                                         f"{skipped[name]} skipped" if skipped[name] else None,
                                         delta_color="inverse")
    st.caption(f"{report.root} · {report.layout} layout · checked in {report.seconds:.1f} s")
    if report.skipped:
        with st.expander(f"{len(report.skipped)} skipped files and why"):
            st.dataframe([{"file": Path(s["path"]).name, "class": s["label"], "reason": s["reason"]}
                          for s in report.skipped], hide_index=True)


def default_choice(smallest: int) -> str:
    for preset, counts in PRESETS.items():
        if smallest >= sum(counts):
            return preset
    return "fractions"


def choose_split(report) -> SplitRequest | None:
    st.subheader("Split")
    smallest = min(n for n in report.counts().values() if n) if report.images else 0
    options = ["chapter", "book", "counts", "fractions"]
    labels = {"chapter": "Chapter: 2000 / 1000 / 1000 per class, in file order",
              "book": "Book: 1000 / 500 / 500 per class, in file order",
              "counts": "Custom counts per class (shuffled)",
              "fractions": "Custom fractions (shuffled, stratified)"}
    choice = st.radio("Split preset", options, index=options.index(default_choice(smallest)),
                      format_func=labels.get, key="split_choice")
    seed = SplitRequest.seed  # the one default, also the CLI's
    if choice in ("counts", "fractions"):
        columns = st.columns(4)
        if choice == "counts":
            third = max(smallest // 5, 1)
            firsts = (max(smallest - 2 * third, 0), third, third)
            values = [columns[i].number_input(f"{name} per class", min_value=0, value=firsts[i],
                                              step=1, key=f"count_{name}")
                      for i, name in enumerate(SPLITS)]
        else:
            values = [columns[i].number_input(f"{name} fraction", 0.0, 1.0, value=v, step=0.05,
                                              key=f"fraction_{name}")
                      for i, (name, v) in enumerate(zip(SPLITS, (0.7, 0.15, 0.15)))]
        seed = columns[3].number_input("Shuffle seed", value=SplitRequest.seed, step=1,
                                       key="split_seed")
    try:
        return SplitRequest(preset=choice if choice in PRESETS else None,
                            counts=tuple(values) if choice == "counts" else None,
                            fractions=tuple(values) if choice == "fractions" else None,
                            seed=int(seed))
    except TransferLabError as exc:
        ui.show_error(exc)
        return None


def show_split(manifest):
    counts = manifest.counts()
    rows = [{"class": c, **{s: counts[s][c] for s in SPLITS}} for c in manifest.classes]
    rows.append({"class": "total", **{s: sum(counts[s].values()) for s in SPLITS}})
    left, right = st.columns([2, 3])
    left.dataframe(rows, hide_index=True)
    chart = px.bar([{"class": c, "split": s, "images": counts[s][c]}
                    for s in SPLITS for c in manifest.classes],
                   x="class", y="images", color="split", barmode="group",
                   title="Class balance per split")
    chart.update_layout(height=300, margin=dict(t=40, b=0, l=0, r=0))
    right.plotly_chart(chart, key="balance_chart")


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, size: int = 160):
    image = open_rgb(path)
    image.thumbnail((size, size))
    return image


def show_samples(manifest):
    st.subheader("Sample photos")
    which = st.segmented_control("Split", SPLITS, default="train", key="sample_split") or "train"
    for name in manifest.classes:
        paths = [p for p, label, s in manifest.rows if s == which and label == name][:8]
        st.caption(f"{name} · {which}")
        if paths:
            st.image([thumbnail(p) for p in paths], caption=[Path(p).name for p in paths],
                     width=110)
        else:
            st.write("no images in this split")


@st.cache_data(show_spinner=False, max_entries=32)
def augmented_variants(path: str, seed: int, size: int = 160):
    import numpy as np

    from transfer_core.augment import preview

    image = open_rgb(path).resize((size, size))
    return preview(np.asarray(image), count=8, seed=seed)


def show_augmentation(manifest):
    st.subheader("What augmentation does")
    st.caption("The chapter's ImageDataGenerator settings — rotation up to 40°, shifts and zoom "
               "of 20%, horizontal flips, nearest fill — as Keras layers inside the model. "
               "The training strategies with augmentation see a new variant of every photo "
               "on every epoch.")
    paths = manifest.files("train")[0] or [p for p, _, _ in manifest.rows]
    seed = st.session_state.setdefault("augment_seed", 0)
    if st.button("New variants", icon=":material/refresh:"):
        st.session_state["augment_seed"] = seed = seed + 1
    with st.spinner("Augmenting…"):
        variants = augmented_variants(paths[0], seed)
    left, right = st.columns([1, 4])
    left.image(thumbnail(paths[0]), caption="original")
    right.image(variants, width=110)


folder = choose_folder()
if not folder:
    st.info("Choose a source above to begin.", icon=":material/info:")
    st.stop()

try:
    with st.spinner("Checking every image by decoding it…"):
        report = ui.scan_folder(folder)
except TransferLabError as exc:
    ui.show_error(exc)
    st.stop()
show_scan(report)

request = choose_split(report)
if request is None:
    st.stop()
try:
    manifest = split(report, request)
except TransferLabError as exc:
    ui.show_error(exc)
    st.stop()
show_split(manifest)

if st.button("Save this split", type="primary", icon=":material/save:"):
    path = manifest.save(ui.workspace())
    ui.set_current_manifest(path)
    st.session_state["saved_split"] = (manifest.fingerprint(), path.name)
    st.rerun()  # the sidebar is drawn before this page: rerun so it shows the new dataset
saved = st.session_state.get("saved_split")
if saved and saved[0] == manifest.fingerprint():
    st.success(f"Saved as {saved[1]}. It is now the current dataset.", icon=":material/check:")
    st.page_link(ui.PAGES["train"], label="Next: train a model", icon=":material/arrow_forward:")

show_samples(manifest)
show_augmentation(manifest)
