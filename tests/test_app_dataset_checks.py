"""The Dataset page's checks of a split, driven through AppTest: duplicate pairs shown with
where each sits, leaks counted, the later copies dropped on request and recorded in the saved
manifest; and the warning for an imbalanced training split. The Train page's class weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from transfer_core.datasets import SplitRequest, split_counts
from test_app import assert_no_exception, button, open_page, texts  # noqa: F401
from test_duplicates import resized, scene


def server_folder(tmp_path, monkeypatch, counts: dict[str, int]) -> Path:
    root = tmp_path / "allowed" / "pets"
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            scene(100 * c + i).save(root / name / f"{name}_{i}.jpg", quality=92)
    monkeypatch.setenv("TRANSFER_LAB_ROOTS", str(tmp_path / "allowed"))
    return root


def choose(at, folder: Path):
    at.radio(key="source").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(folder)).run()
    button(at, "Use this folder").click().run()
    assert_no_exception(at)
    return at


def image_captions(at) -> str:
    return " ".join(image.caption for element in at.get("image") for image in element.proto.imgs)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_duplicate_pairs_are_shown_and_the_later_copy_dropped_into_the_manifest(
        workspace, tmp_path, monkeypatch):
    folder = server_folder(tmp_path, monkeypatch, {"cats": 10, "dogs": 10})
    shutil.copy(folder / "cats/cats_0.jpg", folder / "cats/zz_copy.jpg")
    resized(Image.open(folder / "dogs/dogs_4.jpg"), 0.5).save(folder / "dogs/zz_small.jpg",
                                                             quality=40)
    at = choose(open_page("dataset"), folder)
    at.radio(key="split_choice").set_value("counts").run()
    for key, value in (("count_train", 6), ("count_validation", 2), ("count_test", 3)):
        at.number_input(key=key).set_value(value).run()
    assert_no_exception(at)

    shown = metrics(at)
    assert (shown["Exact copies"], shown["Near copies"]) == ("1", "1")

    captions = image_captions(at)
    assert "cats_0.jpg · cats ·" in captions and "zz_copy.jpg · cats ·" in captions
    assert "dogs_4.jpg · dogs ·" in captions and "zz_small.jpg · dogs ·" in captions
    kinds = " ".join(texts(at.markdown))
    assert "exact copy (same bytes)" in kinds and "near copy" in kinds
    leaks = int(shown["Across splits (leaks)"])
    assert ("sit in two different splits" in " ".join(texts(at.warning))) == (leaks > 0)

    total_before = at.dataframe[0].value.set_index("class").loc["total"].sum()
    at.toggle(key="drop_duplicates").set_value(True).run()
    assert_no_exception(at)
    total_after = at.dataframe[0].value.set_index("class").loc["total"].sum()
    assert total_after == total_before - 2
    button(at, "Save this split").click().run()
    [saved] = (workspace / "manifests").glob("*.json")
    dropped = json.loads(saved.read_text())["dropped"]
    assert len(dropped) == 2  # the later of each pair: which one depends on the shuffle
    assert {d["kind"] for d in dropped} == {"exact", "near"}
    assert all(d["reason"] and d["copy_of"] for d in dropped)


def test_an_imbalanced_training_split_is_warned_about(workspace, tmp_path, monkeypatch):
    folder = server_folder(tmp_path, monkeypatch, {"cats": 16, "dogs": 8})
    at = choose(open_page("dataset"), folder)
    at.radio(key="split_choice").set_value("fractions").run()
    cats, dogs = (split_counts(n, SplitRequest(fractions=(0.7, 0.15, 0.15)))[0] for n in (16, 8))
    warnings = " ".join(texts(at.warning))
    assert (f"The training split is imbalanced: cats has {cats} photos, dogs {dogs} "
            f"({cats / dogs:.1f}×)") in warnings
    assert "No duplicates" in " ".join(texts(at.caption))

    balanced = server_folder(tmp_path / "even", monkeypatch, {"cats": 12, "dogs": 9})
    choose(at, balanced)
    assert "imbalanced" not in " ".join(texts(at.warning))  # 1.33×: below 1.5


def test_train_page_offers_class_weights_and_says_the_split_is_imbalanced(
        workspace, tmp_path, monkeypatch):
    folder = server_folder(tmp_path, monkeypatch, {"cats": 16, "dogs": 8})
    at = choose(open_page("dataset"), folder)
    at.radio(key="split_choice").set_value("fractions").run()
    button(at, "Save this split").click().run()
    at = open_page("train", size_vgg16=32)
    weights = at.radio(key="class_weight")
    assert weights.value == "none" and len(weights.options) == 2
    weights.set_value("balanced").run()
    assert_no_exception(at)
    assert any("The training split is imbalanced" in c for c in texts(at.caption))
