"""The Dataset page driven through AppTest: a dataset made class by class from uploaded photos
(added, renamed, removed, kept on disk as the page shows it, reopened by a new session), and
folders already split (the layout named, "as laid out" chosen first, the test split's source)."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from test_app import assert_no_exception, button, open_page, picture, texts, usable_counts
from test_split_folders import hymenoptera
from transfer_core.datasets import scan


def uploader(at: AppTest, label: str):
    matches = [u for u in at.file_uploader if u.label == label]
    assert matches, [u.label for u in at.file_uploader]
    return matches[0]


def expanders(at: AppTest) -> list[str]:
    return [e.label for e in at.expander]


def make_your_own(at: AppTest) -> AppTest:
    at.radio(key="source").set_value("Make your own").run()
    assert_no_exception(at)
    return at


def new_dataset(at: AppTest, name: str) -> AppTest:
    at.text_input(key="own_new_name").set_value(name).run()
    button(at, "Create the dataset").click().run()
    assert_no_exception(at)
    return at


def add_class(at: AppTest, name: str) -> AppTest:
    at.text_input(key="own_new_class").set_value(name).run()
    button(at, "Add class").click().run()
    assert_no_exception(at)
    return at


def upload(at: AppTest, label: str, files: list[tuple[str, bytes]]) -> AppTest:
    uploader(at, f"Add photos to {label}").set_value(
        [(name, data, "image/png") for name, data in files]).run()
    assert_no_exception(at)
    return at


def photos(rgb, count, start=0):
    return [(f"IMG_{start + i}.png", picture(rgb, seed=start + i)) for i in range(count)]


def test_a_dataset_is_made_from_uploads_and_kept_as_shown(workspace):
    at = new_dataset(make_your_own(open_page("dataset")), "Pen vs mug")
    assert at.selectbox(key="own_choice").value == "Pen vs mug"
    at = add_class(add_class(at, "pen"), "mug")
    assert expanders(at) == ["mug · 0 photos", "pen · 0 photos"]
    assert "Add at least two classes with photos" in " ".join(texts(at.info))

    at = upload(at, "pen", photos((200, 40, 30), 6) + [("notes.txt", b"not a photo")])
    assert "Added 6 photo(s) to pen." in texts(at.success)
    assert any("notes.txt is not an image" in w for w in texts(at.warning))
    at = upload(at, "mug", photos((30, 60, 200), 5, start=100) + photos((200, 40, 30), 1))
    assert any("already in class 'pen'" in w for w in texts(at.warning))
    assert expanders(at) == ["mug · 5 photos", "pen · 6 photos"]
    assert usable_counts(at) == {"mug": "5 usable", "pen": "6 usable"}

    folder = workspace / "datasets" / "own" / "Pen vs mug"
    assert scan(folder).counts() == {"mug": 5, "pen": 6}
    assert at.radio(key="split_choice").value == "fractions"  # small classes
    assert any("Under 10 photos in mug (5), pen (6)" in w for w in texts(at.warning))

    # Remove one photo, rename a class: the folder follows, the scan sees it.
    first = at.multiselect(key="own_remove_pen").options[0]
    at.multiselect(key="own_remove_pen").set_value([first]).run()
    button(at, "Remove 1 photo").click().run()
    at.text_input(key="own_rename_to_mug").set_value("my mug").run()
    at.button(key="own_rename_mug").click().run()
    assert_no_exception(at)
    assert expanders(at) == ["my mug · 5 photos", "pen · 5 photos"]
    assert usable_counts(at) == {"my mug": "5 usable", "pen": "5 usable"}
    assert scan(folder).counts() == {"my mug": 5, "pen": 5}
    assert not (folder / "pen" / first).exists()

    # A new session (a reload, another tab) reopens it by name, as it was.
    again = make_your_own(open_page("dataset"))
    assert again.selectbox(key="own_choice").options == ["New dataset…", "Pen vs mug"]
    again.selectbox(key="own_choice").set_value("Pen vs mug").run()
    assert expanders(again) == ["my mug · 5 photos", "pen · 5 photos"]

    # Save the split and delete a class: one class left is no dataset to split.
    button(again, "Save this split").click().run()
    saved = json.loads(next((workspace / "manifests").glob("*.json")).read_text())
    assert saved["counts"]["test"] == {"my mug": 1, "pen": 1}
    assert again.button(key="own_delete_my mug").disabled  # not without saying yes
    again.checkbox(key="own_delete_sure_my mug").check().run()
    again.button(key="own_delete_my mug").click().run()
    assert_no_exception(again)
    assert expanders(again) == ["pen · 5 photos"]
    assert not (folder / "my mug").exists()
    assert not again.metric  # nothing scanned or split below

    # Delete the whole dataset, again only once confirmed: the page starts a new one.
    assert again.button(key="own_delete_dataset").disabled
    again.checkbox(key="own_delete_dataset_sure").check().run()
    again.button(key="own_delete_dataset").click().run()
    assert_no_exception(again)
    assert "Deleted the dataset 'Pen vs mug' and its 5 photo(s)." in texts(again.success)
    assert again.selectbox(key="own_choice").options == ["New dataset…"]
    assert not folder.exists()


def test_a_taken_name_is_refused_not_merged(workspace):
    at = new_dataset(make_your_own(open_page("dataset")), "class 3b")
    at = add_class(at, "pen")
    other = new_dataset(make_your_own(open_page("dataset")), "Class 3B")
    assert "There is already a dataset named 'Class 3B'" in texts(other.error)[0]
    assert other.selectbox(key="own_choice").value != "class 3b"
    at = add_class(at, "PEN")
    assert "There is already a class 'pen'" in texts(at.error)[0]


def test_the_datasets_quota_applies_to_photos(workspace, monkeypatch):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "10K")
    at = add_class(new_dataset(make_your_own(open_page("dataset")), "big"), "noise")
    at = upload(at, "noise", [("a.png", picture((1, 2, 3), size=120, seed=1)),
                              ("b.png", picture((1, 2, 3), size=120, seed=2))])
    refused = [w for w in texts(at.warning) if "quota" in w]
    assert refused and "TRANSFER_LAB_DATASETS_QUOTA" in refused[0]
    assert sum(1 for _ in (workspace / "datasets" / "own" / "big" / "noise").iterdir()) < 2


def choose_folder(at: AppTest, folder) -> AppTest:
    at.radio(key="source").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(folder)).run()
    button(at, "Use this folder").click().run()
    assert_no_exception(at)
    return at


def test_split_folders_are_named_and_laid_out_by_default(workspace, tmp_path, monkeypatch):
    root = hymenoptera(tmp_path)
    monkeypatch.setenv("TRANSFER_LAB_ROOTS", str(tmp_path))
    at = choose_folder(open_page("dataset"), root)
    assert usable_counts(at) == {"ants": "14 usable", "bees": "17 usable"}
    assert "split folders: train, val" in " ".join(texts(at.caption))
    choice = at.radio(key="split_choice")
    assert choice.options[0].startswith("As laid out") and choice.value == "as-laid-out"
    assert at.radio(key="test_from").value == "train"
    at.number_input(key="holdout").set_value(0.2).run()
    button(at, "Save this split").click().run()
    saved = json.loads(next((workspace / "manifests").glob("*.json")).read_text())
    assert saved["counts"]["test"] == {"ants": 2, "bees": 2}
    assert saved["counts"]["validation"] == {"ants": 4, "bees": 5}

    at.radio(key="test_from").set_value("validation").run()
    assert "Test = the validation split" in " ".join(texts(at.caption))
    assert not [n for n in at.number_input if n.key == "holdout"]


def test_a_full_disk_refuses_one_photo_in_one_line_and_keeps_the_others(tmp_path, monkeypatch):
    import errno

    from transfer_core import own_dataset

    dataset = own_dataset.create(tmp_path / "ws", "pens")
    dataset.add_class("pen")
    real = own_dataset.write_bytes_atomic
    calls = []

    def full_once(path, data):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(own_dataset, "write_bytes_atomic", full_once)
    first, second = dataset.add_photos("pen", photos((200, 40, 30), 2))
    assert first.kept is None and "was not kept: no space left on device (" in first.message
    assert second.kept is not None and dataset.counts() == {"pen": 1}
