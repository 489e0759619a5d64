"""Step 1: choose the images, check every one by decoding it, split into train/validation/test."""

from pathlib import Path

import plotly.express as px
import streamlit as st

from app_pages import _ui as ui
from app_pages._own_dataset import own_source
from transfer_core import config, duplicates, own_dataset, sources
from transfer_core.balance import imbalance
from transfer_core.datasets import (AS_LAID_OUT, PRESETS, SPLITS, SplitRequest,
                                    drop_later_copies, split)
from transfer_core.errors import ImageError, TransferLabError
from transfer_core.images import open_rgb

st.title("Dataset")
st.caption("Step 1 of 5 · choose your images; every file is checked by decoding it, then split "
           "into training, validation and test sets.")

SOURCES = ["Demo set", "Folder on this server", "Upload a zip", "Make your own",
           "Download Dogs vs Cats"]


def choose_folder() -> str | None:
    source = st.radio("Where are the images?", SOURCES, horizontal=True, key="source",
                      index=1 if config.default_data_dir() else 0)
    if source == "Demo set":
        demo_source()
    elif source == "Folder on this server":
        folder_source()
    elif source == "Upload a zip":
        zip_source()
    elif source == "Make your own":
        folder = own_source()  # None until two classes have photos: nothing to split yet
        if folder is None:
            st.session_state.pop("data_folder", None)
        else:
            st.session_state["data_folder"] = folder
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
    st.caption(f"{report.root} · {report.layout_text()} · checked in {report.seconds:.1f} s")
    if report.split_folders:
        per_split = report.counts_per_split()
        st.dataframe([{"class": c, **{report.split_folders[s]: per_split[s][c]
                                      for s in per_split}} for c in report.classes],
                     hide_index=True)
    for note in report.notes:
        st.warning(note, icon=":material/rule:")
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
    labels = {AS_LAID_OUT: "As laid out: the folders' own train / validation / test split",
              "chapter": "Chapter: 2000 / 1000 / 1000 per class, in file order",
              "book": "Book: 1000 / 500 / 500 per class, in file order",
              "counts": "Custom counts per class (shuffled)",
              "fractions": "Custom fractions (shuffled, stratified)"}
    default = default_choice(smallest)
    if report.split_folders:  # offered first and chosen unless the user picks another
        options, default = [AS_LAID_OUT, *options], AS_LAID_OUT
    choice = st.radio("Split preset", options, index=options.index(default),
                      format_func=labels.get, key="split_choice")
    if choice == AS_LAID_OUT:
        return laid_out_request(report)
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


def laid_out_request(report) -> SplitRequest | None:
    """As laid out; when a split has no folder, the user says where it comes from."""
    test_from, holdout = "train", 0.2
    if "test" not in report.split_folders:
        test_from = st.radio(
            "There is no test folder. The test split comes from:", ["train", "validation"],
            key="test_from", format_func={
                "train": "part of the training folder (an honest test)",
                "validation": "the validation folder (optimistic: it also chooses the best "
                              "epoch)"}.get)
    if test_from == "train" or "validation" not in report.split_folders:
        holdout = st.number_input("Fraction of each class's training folder to hold out",
                                  0.05, 0.5, 0.2, step=0.05, key="holdout")
    try:
        return SplitRequest(preset=AS_LAID_OUT, test_from=test_from, holdout=holdout,
                            seed=int(st.session_state.get("split_seed", SplitRequest.seed)))
    except TransferLabError as exc:
        ui.show_error(exc)
        return None


def show_few_photos(report, manifest):
    warning = own_dataset.few_photos(report.counts(), manifest.counts()["test"])
    if warning:
        st.warning(warning, icon=":material/photo_library:")


def show_duplicates(report, manifest):
    """Copies of one picture and where each sits; offers to drop the later copies. Returns
    the manifest to save (without them when the user chose so)."""
    if not report.duplicates:
        st.caption(":material/check: No duplicates: every photo was compared with every other, "
                   "by its bytes and by a perceptual hash.")
        return manifest
    located = duplicates.locate(report.duplicates, manifest.rows)
    found = duplicates.summary(located)
    st.subheader("Duplicates and leaks")
    c1, c2, c3 = st.columns(3)
    c1.metric("Exact copies", found["exact"], help="Pairs of files with the same bytes.")
    c2.metric("Near copies", found["near"],
              help="Pairs of one picture resized, re-compressed or saved in another format.")
    c3.metric("Across splits (leaks)", found["leaks"])
    if found["leaks"]:
        st.warning(f"{found['leaks']} pair(s) sit in two different splits: the model would be "
                   "validated or tested on photos it trained on, and every accuracy measured "
                   "on them is inflated.", icon=":material/warning:")
    shown = sorted(located, key=lambda pair: not pair["leak"])[:PAIRS_SHOWN]
    for pair in shown:
        show_pair(pair)
    if len(located) > len(shown):
        with st.expander(f"All {len(located)} pairs"):
            st.dataframe([{"first": Path(p["first"]).name, "in": p["first_split"],
                           "second": Path(p["second"]).name, "in ": p["second_split"],
                           "kind": p["kind"], "hash bits apart": p["distance"]}
                          for p in located], hide_index=True)
    cleaned = drop_later_copies(manifest, report.duplicates)
    if not cleaned.dropped:  # every pair has a photo in no split
        return manifest
    drop = st.toggle(f"Drop the later copy of each pair from the split "
                     f"({len(cleaned.dropped)} photos)", key="drop_duplicates",
                     help="Of each pair, the copy in the later split goes (test after "
                          "validation after train), so training keeps its photo and the "
                          "evaluation loses the copy. The manifest records what was dropped "
                          "and why.")
    return cleaned if drop else manifest


PAIRS_SHOWN = 12


def show_pair(pair: dict):
    columns = st.columns([1, 1, 3])
    for column, side in zip(columns, ("first", "second")):
        where = pair[f"{side}_split"] or "in no split"
        caption = f"{Path(pair[side]).name} · {pair[f'{side}_label']} · {where}"
        try:
            column.image(thumbnail(pair[side], 110), caption=caption)
        except (ImageError, OSError):  # changed or gone since the scan
            column.caption(f"{caption} (cannot be shown now)")
    what = ("exact copy (same bytes)" if pair["kind"] == "exact"
            else f"near copy ({pair['distance']} of 64 hash bits differ)")
    columns[2].markdown(f"**{what}**" + (" · :red[leak across splits]" if pair["leak"] else ""))


def show_imbalance(manifest):
    uneven = imbalance(manifest.counts()["train"])
    if uneven:
        st.warning(
            f"The training split is imbalanced: {uneven['largest']} has "
            f"{uneven['largest_count']} photos, {uneven['smallest']} "
            f"{uneven['smallest_count']} ({uneven['ratio']:.1f}×). A model can then score well "
            f"by favouring {uneven['largest']}. Even out the counts, or choose balanced class "
            "weights on the Train page (More settings).", icon=":material/balance:")


def show_split(manifest):
    counts = manifest.counts()
    if manifest.test_is_validation:
        st.caption("Test = the validation split: evaluation will say so, as that split also "
                   "chooses the best epoch (optimistic).")
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
manifest = show_duplicates(report, manifest)
show_imbalance(manifest)
show_few_photos(report, manifest)
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
