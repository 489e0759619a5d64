"""Folders that are already split (train/ants, val/ants …): the scan names the layout and the
classes, says what differs between the split folders, and "as laid out" keeps the given split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import COLOURS, colour_image
from transfer_core.cli import main
from transfer_core.datasets import AS_LAID_OUT, SplitRequest, load_manifest, scan, split
from transfer_core.errors import DatasetError, NotEnoughImagesError


def make_split_folders(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """root/<split folder>/<class>/<n pictures>, each class its own colour."""
    seed = 0
    for split_folder, classes in layout.items():
        for name, count in classes.items():
            folder = root / split_folder / name
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                colour = list(COLOURS.values())[sorted(COLOURS).index(name) % 3] \
                    if name in COLOURS else (120, 120, 120)
                colour_image(colour, 24, seed=seed).save(folder / f"{name}.{i}.png")
    return root


def hymenoptera(tmp_path) -> Path:
    """The PyTorch tutorial's shape: train and val only."""
    return make_split_folders(tmp_path / "hymenoptera_data", {
        "train": {"ants": 10, "bees": 12}, "val": {"ants": 4, "bees": 5}})


def cats_and_dogs_small(tmp_path) -> Path:
    """The chapter's prepared folder: train, validation and test."""
    return make_split_folders(tmp_path / "cats_and_dogs_small", {
        "train": {"cats": 8, "dogs": 8}, "validation": {"cats": 3, "dogs": 3},
        "test": {"cats": 2, "dogs": 4}})


def test_the_tutorials_train_val_folder_has_its_real_classes(tmp_path):
    report = scan(hymenoptera(tmp_path))
    assert report.layout == "split-folders"
    assert report.layout_text() == "split folders: train, val"
    assert report.classes == ["ants", "bees"]  # not ["train", "val"]
    assert report.counts() == {"ants": 14, "bees": 17}
    assert report.counts_per_split() == {"train": {"ants": 10, "bees": 12},
                                         "validation": {"ants": 4, "bees": 5}}
    assert any("no test folder" in note for note in report.notes)


def test_as_laid_out_keeps_the_chapters_three_folders(tmp_path):
    root = cats_and_dogs_small(tmp_path)
    report = scan(root)
    assert report.layout_text() == "split folders: train, validation, test"
    manifest = split(report, SplitRequest(preset=AS_LAID_OUT))
    assert manifest.counts() == {"train": {"cats": 8, "dogs": 8},
                                 "validation": {"cats": 3, "dogs": 3},
                                 "test": {"cats": 2, "dogs": 4}}
    for path, label, split_name in manifest.rows:  # every file stays where it was put
        folder = {"train": "train", "validation": "validation", "test": "test"}[split_name]
        assert Path(path).relative_to(root).parts[:2] == (folder, label)
    assert manifest.request["test_from"] == "folder"
    assert not manifest.test_is_validation


def test_train_and_val_only_takes_the_test_from_training_with_the_seed(tmp_path):
    report = scan(hymenoptera(tmp_path))
    request = SplitRequest(preset=AS_LAID_OUT, test_from="train", holdout=0.2, seed=7)
    manifest = split(report, request)
    counts = manifest.counts()
    assert counts["test"] == {"ants": 2, "bees": 2}  # 20% of 10 and of 12
    assert counts["train"] == {"ants": 8, "bees": 10}
    assert counts["validation"] == {"ants": 4, "bees": 5}  # the val folder, untouched
    tests = {p for p, _, s in manifest.rows if s == "test"}
    assert all("/train/" in p for p in tests)
    assert split(report, request).rows == manifest.rows  # the seed decides, every time
    other = split(report, SplitRequest(preset=AS_LAID_OUT, holdout=0.2, seed=8))
    assert {p for p, _, s in other.rows if s == "test"} != tests


def test_evaluating_on_validation_is_recorded_and_used_for_the_test(tmp_path, workspace):
    report = scan(hymenoptera(tmp_path))
    manifest = split(report, SplitRequest(preset=AS_LAID_OUT, test_from="validation"))
    assert manifest.counts()["test"] == {"ants": 0, "bees": 0}
    saved = load_manifest(manifest.save(workspace))
    assert saved.request["test_from"] == "validation" and saved.test_is_validation
    assert saved.files("test") == saved.files("validation")
    assert len(saved.files("test")[0]) == 9
    assert "validation folder" in SplitRequest(preset=AS_LAID_OUT,
                                               test_from="validation").describe()


def test_the_sidebar_says_the_test_is_the_validation_split(tmp_path, workspace):
    from test_app import open_page, texts

    report = scan(hymenoptera(tmp_path))
    split(report, SplitRequest(preset=AS_LAID_OUT, test_from="validation")).save(workspace)
    captions = " ".join(texts(open_page("dataset").sidebar.caption))
    assert "test = validation" in captions and "test 0" not in captions, captions


def test_split_folder_names_are_read_in_any_case(tmp_path):
    root = make_split_folders(tmp_path / "mixed", {
        "Train": {"red": 5, "blue": 5}, "VALID": {"red": 2, "blue": 2},
        "Testing": {"red": 2, "blue": 2}})
    report = scan(root)
    assert report.split_folders == {"train": "Train", "validation": "VALID", "test": "Testing"}
    assert report.classes == ["blue", "red"]
    manifest = split(report, SplitRequest(preset=AS_LAID_OUT))
    assert {s: sum(c.values()) for s, c in manifest.counts().items()} == \
        {"train": 10, "validation": 4, "test": 4}


def test_a_class_missing_from_one_split_is_named(tmp_path):
    root = make_split_folders(tmp_path / "uneven", {
        "train": {"red": 5, "blue": 5, "green": 5}, "val": {"red": 2, "blue": 2},
        "test": {"red": 2, "blue": 2, "green": 2}})
    report = scan(root)
    assert report.classes == ["blue", "green", "red"]
    assert report.notes == ["Class 'green' has no usable images in val/: the classes differ "
                            "between the split folders."]
    manifest = split(report, SplitRequest(preset=AS_LAID_OUT))
    assert manifest.counts()["validation"]["green"] == 0


def test_a_class_without_training_images_cannot_be_laid_out(tmp_path):
    root = make_split_folders(tmp_path / "no-train", {
        "train": {"red": 5, "blue": 5}, "val": {"red": 2, "blue": 2, "green": 4}})
    report = scan(root)
    assert "Class 'green' has no usable images in train/" in report.notes[0]
    with pytest.raises(NotEnoughImagesError, match="'green' has no usable images in the "
                                                   "training folder"):
        split(report, SplitRequest(preset=AS_LAID_OUT))
    # Another preset pools every folder's images, so the class can still be split.
    pooled = split(report, SplitRequest(fractions=(0.5, 0.25, 0.25)))
    assert sum(pooled.counts()["train"].values()) == 8


def test_as_laid_out_needs_split_folders(folder_dataset):
    with pytest.raises(DatasetError, match="needs split folders .* one folder per class"):
        split(scan(folder_dataset), SplitRequest(preset=AS_LAID_OUT))


def test_classes_named_like_splits_stay_classes(tmp_path):
    """train/ and test/ full of photos (no class folders inside) are two classes."""
    for name in ("train", "test"):
        (tmp_path / "odd" / name).mkdir(parents=True)
        for i in range(3):
            colour_image((10, 10, 10), 16, seed=i).save(tmp_path / "odd" / name / f"{i}.png")
    report = scan(tmp_path / "odd")
    assert report.layout == "folders" and report.classes == ["test", "train"]


def test_two_folders_for_one_split_are_refused(tmp_path):
    root = make_split_folders(tmp_path / "both", {
        "train": {"red": 2, "blue": 2}, "val": {"red": 1, "blue": 1},
        "validation": {"red": 1, "blue": 1}})
    with pytest.raises(DatasetError, match="val and validation are both a validation folder"):
        scan(root)


def test_links_out_of_the_allowed_roots_and_duplicates_still_count(tmp_path):
    root = cats_and_dogs_small(tmp_path)
    outside = make_split_folders(tmp_path / "outside", {"x": {"red": 2}})
    os.symlink(outside / "x" / "red", root / "train" / "secret")
    (root / "test" / "cats" / "copy.png").write_bytes(
        (root / "train" / "cats" / "cats.0.png").read_bytes())
    report = scan(root, roots=[root])
    assert report.counts()["secret"] == 0 and report.notes == []
    assert any("links outside the allowed folders" in s["reason"] for s in report.skipped)
    manifest = split(report, SplitRequest(preset=AS_LAID_OUT))
    assert len(report.duplicates) == 1
    from transfer_core import duplicates
    assert duplicates.summary(duplicates.locate(report.duplicates, manifest.rows))["leaks"] == 1


def test_the_cli_scans_and_splits_as_laid_out(tmp_path, workspace, capsys):
    root = hymenoptera(tmp_path)
    assert main(["scan", str(root), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["layout"] == "split-folders"
    assert found["layout_text"] == "split folders: train, val"
    assert found["split_folders"] == {"train": "train", "validation": "val"}
    assert main(["split", str(root), "--preset", "as-laid-out", "--test-from", "validation",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["request"]["test_from"] == "validation"
    assert result["counts"]["validation"] == {"ants": 4, "bees": 5}
    assert main(["scan", str(root)]) == 0
    assert "split folders: train, val" in capsys.readouterr().out
