"""The Dataset page's "Make your own" source: classes by name, photos by upload or camera, each
kept on the server as it arrives (transfer_core/own_dataset.py). One column throughout, so
that it works in a phone's window. Not a page (dataset.py calls `own_source`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import _ui as ui
from transfer_core import own_dataset
from transfer_core.errors import ImageError, TransferLabError
from transfer_core.images import open_rgb

NEW_DATASET = "New dataset…"
THUMBNAILS_SHOWN = 40


def own_source() -> str | None:
    """The folder of the chosen made dataset once two classes have photos, else None."""
    st.write("Make a dataset here, class by class: name a class, then add its photos from "
             "your files or the camera. Every photo is checked and kept on the server at once, "
             "so a reload, another tab or another day finds the dataset as it was.")
    workspace = ui.workspace()
    names = own_dataset.list_datasets(workspace)
    # A new session starts a new dataset: opening another's is a deliberate choice by name.
    choice = st.selectbox("Your dataset", [NEW_DATASET, *names], key="own_choice",
                          help="Every dataset made here is kept under the workspace's "
                               "datasets/own/ folder and can be reopened by its name.")
    _show_messages()
    if choice == NEW_DATASET:
        st.text_input("Name of the new dataset", key="own_new_name", max_chars=60,
                      placeholder="pen vs mug")
        st.button("Create the dataset", icon=":material/create_new_folder:",
                  on_click=_create, args=(workspace,))
        return None
    try:
        dataset = own_dataset.open_dataset(workspace, choice)
        return _edit(dataset)
    except TransferLabError as exc:  # deleted or renamed in another tab meanwhile
        ui.show_error(exc)
        return None


def _edit(dataset: own_dataset.OwnDataset) -> str | None:
    st.text_input("New class", key="own_new_class", max_chars=60, placeholder="my pen")
    st.button("Add class", icon=":material/add:", on_click=_add_class, args=(dataset,))
    counts = dataset.counts()
    for label, count in counts.items():
        with st.expander(f"{label} · {count} photo{'' if count == 1 else 's'}", expanded=True):
            _edit_class(dataset, label)
    _offer_deletion(dataset, sum(counts.values()))
    with_photos = [label for label, n in counts.items() if n]
    if len(with_photos) < 2:
        st.info("Add at least two classes with photos; the check and the split then follow "
                "below.", icon=":material/info:")
        return None
    return str(dataset.folder)


def _edit_class(dataset: own_dataset.OwnDataset, label: str) -> None:
    generation = st.session_state.setdefault("own_generation", 0)
    uploads = st.file_uploader(f"Add photos to {label}", accept_multiple_files=True,
                               key=f"own_upload_{label}_{generation}",
                               help="Choose many at once. JPEG, PNG, BMP, GIF or WebP; each is "
                                    "checked by decoding it.")
    if uploads:
        _add_photos(dataset, label, [(u.name, u.getvalue()) for u in uploads])
    if st.toggle("Use the camera", key=f"own_camera_on_{label}"):
        shot = st.camera_input(f"Take a photo of {label}", key=f"own_camera_{label}_{generation}")
        if shot is not None:
            _add_photos(dataset, label, [(f"camera photo of {label}", shot.getvalue())])
    photos = dataset.photos(label)
    if photos:
        _show_thumbnails(photos)
        _remove_photos(dataset, label, photos)
    with st.popover("Rename or delete", icon=":material/edit:"):
        st.text_input("New name", value=label, key=f"own_rename_to_{label}", max_chars=60)
        st.button("Rename class", key=f"own_rename_{label}", on_click=_rename,
                  args=(dataset, label))
        sure = st.checkbox(f"Yes, delete {label} and its {len(photos)} photos",
                           key=f"own_delete_sure_{label}")
        st.button("Delete class", key=f"own_delete_{label}", icon=":material/delete:",
                  disabled=not sure, on_click=_delete, args=(dataset, label))


def _offer_deletion(dataset: own_dataset.OwnDataset, photos: int) -> None:
    with st.popover("Delete this dataset", icon=":material/delete_forever:"):
        st.caption("Splits saved from it and models trained on it stay; evaluating those "
                   "models again needs the photos.")
        sure = st.checkbox(f"Yes, delete {dataset.name} and its {photos} photos",
                           key="own_delete_dataset_sure")
        st.button("Delete the dataset", key="own_delete_dataset", icon=":material/delete:",
                  disabled=not sure, on_click=_delete_dataset, args=(dataset.name,))


def _show_thumbnails(photos: list[Path]) -> None:
    shown = photos[-THUMBNAILS_SHOWN:][::-1]  # newest first
    pictures, captions = [], []
    for path in shown:
        try:
            pictures.append(thumbnail(str(path), path.stat().st_mtime_ns))
            captions.append(path.name[:8])
        except (ImageError, OSError):  # removed in another tab since the listing
            continue
    st.image(pictures, caption=captions, width=72)
    if len(photos) > len(shown):
        st.caption(f"The newest {len(shown)} of {len(photos)} are shown.")


def _remove_photos(dataset, label: str, photos: list[Path]) -> None:
    chosen = st.multiselect("Photos to remove", [p.name for p in reversed(photos)],
                            key=f"own_remove_{label}", format_func=lambda name: name[:8],
                            help="The names under the thumbnails.")
    if chosen and st.button(f"Remove {len(chosen)} photo{'' if len(chosen) == 1 else 's'}",
                            key=f"own_remove_button_{label}", icon=":material/delete:"):
        for name in chosen:
            dataset.remove_photo(label, name)
        _done(f"Removed {len(chosen)} photo(s) from {label}.")


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, mtime_ns: int, size: int = 144):
    return open_rgb(path, max_side=size)


def _add_photos(dataset, label: str, photos: list[tuple[str, bytes]]) -> None:
    """Keep what decodes, say what did not, and clear the uploader and the camera (a new
    generation of their keys) so that nothing is sent twice."""
    with st.spinner(f"Checking {len(photos)} photo(s)…"):
        try:
            arrivals = dataset.add_photos(label, photos)
        except TransferLabError as exc:  # the class was deleted in another tab
            ui.show_error(exc)
            return
    added = [a for a in arrivals if a.kept and a.message.startswith("added")]
    messages = [("success", f"Added {len(added)} photo(s) to {label}.")] if added else []
    messages += [("info" if a.kept else "warning", a.message)
                 for a in arrivals if not (a.kept and a.message.startswith("added"))]
    _done(*messages)


def _done(*messages) -> None:
    st.session_state["own_messages"] = [m if isinstance(m, tuple) else ("success", m)
                                        for m in messages]
    st.session_state["own_generation"] = st.session_state.get("own_generation", 0) + 1
    st.rerun()


def _show_messages() -> None:
    for kind, text in st.session_state.pop("own_messages", []):
        {"success": st.success, "info": st.info, "warning": st.warning}[kind](text)
    error = st.session_state.pop("own_error", None)
    if error:
        st.error(error, icon=":material/error:")


# Callbacks run before the script, so they may set the widgets' values (the dataset chosen).

def _create(workspace) -> None:
    try:
        dataset = own_dataset.create(workspace, st.session_state.get("own_new_name", ""))
    except TransferLabError as exc:
        st.session_state["own_error"] = str(exc)
        return
    st.session_state["own_choice"] = dataset.name
    st.session_state["own_new_name"] = ""
    st.session_state["own_messages"] = [("success", f"Made the dataset {dataset.name!r}: now "
                                                    "add a class.")]


def _add_class(dataset) -> None:
    try:
        label = dataset.add_class(st.session_state.get("own_new_class", ""))
    except TransferLabError as exc:
        st.session_state["own_error"] = str(exc)
        return
    st.session_state["own_new_class"] = ""
    st.session_state["own_messages"] = [("success", f"Added the class {label}: now add its "
                                                    "photos.")]


def _rename(dataset, label: str) -> None:
    try:
        new = dataset.rename_class(label, st.session_state.get(f"own_rename_to_{label}", ""))
    except TransferLabError as exc:
        st.session_state["own_error"] = str(exc)
        return
    st.session_state["own_messages"] = [("success", f"Renamed {label} to {new}.")]


def _delete(dataset, label: str) -> None:
    try:
        count = dataset.delete_class(label)
    except TransferLabError as exc:
        st.session_state["own_error"] = str(exc)
        return
    st.session_state["own_messages"] = [("success", f"Deleted {label} and its {count} "
                                                    "photo(s).")]


def _delete_dataset(name: str) -> None:
    try:
        count = own_dataset.delete_dataset(ui.workspace(), name)
    except TransferLabError as exc:  # deleted in another tab meanwhile
        st.session_state["own_error"] = str(exc)
        return
    st.session_state["own_choice"] = NEW_DATASET
    st.session_state["own_delete_dataset_sure"] = False
    st.session_state["own_messages"] = [("success", f"Deleted the dataset {name!r} and its "
                                                    f"{count} photo(s).")]
