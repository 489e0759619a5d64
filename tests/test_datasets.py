"""Finding, checking and splitting images: what a user sees in the scan report and manifest."""

from __future__ import annotations

import io
import json
import pickle
import random
from pathlib import Path

import pytest
from PIL import Image

from conftest import COLOURS, colour_image, huge_png_header
from transfer_core.compact import natural_order
from transfer_core.datasets import (ImageEntry, ScanReport, SplitRequest, find_images, lay_out,
                                    load_manifest, natural_key, scan, split)
from transfer_core.errors import DatasetError, NotEnoughImagesError


def test_folder_layout_finds_every_class(folder_dataset):
    report = scan(folder_dataset)
    assert report.layout == "folders"
    assert report.classes == ["blue", "green", "red"]
    assert report.counts() == {"blue": 12, "green": 12, "red": 12}
    assert report.skipped == []


def test_kaggle_names_give_labels_and_numeric_order(kaggle_dataset):
    layout, entries = find_images(kaggle_dataset)
    assert layout == "kaggle"
    cats = [Path(e.path).name for e in entries if e.label == "cat"]
    assert cats[:3] == ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg"]
    assert cats.index("cat.10.jpg") == cats.index("cat.9.jpg") + 1  # numbers, not strings


def test_a_lone_top_folder_is_descended_into(tmp_path, folder_dataset):
    wrapper = tmp_path / "unzipped"
    wrapper.mkdir()
    folder_dataset.rename(wrapper / "PetImages")
    assert scan(wrapper).counts() == {"blue": 12, "green": 12, "red": 12}


def test_every_broken_file_is_skipped_with_its_reason(folder_dataset):
    red = folder_dataset / "red"
    good = io.BytesIO()
    colour_image((200, 0, 0), 64).save(good, "JPEG")
    (red / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (red / "empty.jpg").write_bytes(b"")
    (red / "notes.jpg").write_text("this is not a photo")
    huge_png_header(red / "huge.png")
    report = scan(folder_dataset)
    reasons = {Path(item["path"]).name: item["reason"] for item in report.skipped}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "notes.jpg", "huge.png"}
    assert "truncated or corrupt" in reasons["truncated.jpg"]
    assert "zero bytes" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "too large" in reasons["huge.png"]
    assert report.counts()["red"] == 12 and report.skipped_counts()["red"] == 4


def test_unusual_modes_and_formats_are_usable(folder_dataset):
    green = folder_dataset / "green"
    base = colour_image((40, 180, 60), 40)
    base.convert("CMYK").save(green / "cmyk.jpg")
    base.convert("RGBA").save(green / "rgba.png")
    base.convert("L").save(green / "gray.png")
    base.convert("P").save(green / "palette.gif")
    base.save(green / "plain.bmp")
    base.save(green / "plain.webp")
    report = scan(folder_dataset)
    assert report.skipped == []
    assert report.counts()["green"] == 18


def test_one_class_is_a_clear_error(tmp_path):
    folder = tmp_path / "only"
    (folder / "cats").mkdir(parents=True)
    colour_image((1, 2, 3)).save(folder / "cats" / "a.png")
    with pytest.raises(DatasetError, match="at least two"):
        scan(folder)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no folder"):
        scan(tmp_path / "nope")


def _kaggle_report(per_class: int) -> ScanReport:
    """A scan result over Kaggle names, listed out of order (split must not trust order)."""
    entries = [ImageEntry(f"/data/{label}.{i}.jpg", label)
               for label in ("cat", "dog") for i in range(per_class)]
    random.Random(0).shuffle(entries)
    entries.sort(key=lambda e: e.label)  # grouped by class, indices shuffled within
    return ScanReport("/data", "kaggle", ["cat", "dog"], entries)


def _names(manifest, split_name, label):
    return [Path(p).name for p, name, s in manifest.rows if s == split_name and name == label]


def _sorted_report(per_class):
    report = _kaggle_report(per_class)
    from transfer_core.datasets import natural_key
    report.images.sort(key=lambda e: natural_key(Path(e.path).name))
    return report


def test_chapter_preset_is_the_blog_posts_split():
    manifest = split(_sorted_report(4000), SplitRequest(preset="chapter"))
    counts = manifest.counts()
    assert counts["train"] == {"cat": 2000, "dog": 2000}
    assert counts["validation"] == {"cat": 1000, "dog": 1000}
    assert counts["test"] == {"cat": 1000, "dog": 1000}
    assert _names(manifest, "train", "cat")[0] == "cat.0.jpg"
    assert _names(manifest, "train", "cat")[-1] == "cat.1999.jpg"
    assert _names(manifest, "validation", "dog")[0] == "dog.2000.jpg"
    assert _names(manifest, "test", "dog")[-1] == "dog.3999.jpg"


def test_book_preset_and_default_is_chapter():
    manifest = split(_sorted_report(2500), SplitRequest(preset="book"))
    assert manifest.counts()["test"] == {"cat": 500, "dog": 500}
    assert _names(manifest, "test", "cat")[-1] == "cat.1999.jpg"
    assert SplitRequest().preset == "chapter"


def test_counts_allow_a_zero_and_are_seeded():
    report = _sorted_report(50)
    first = split(report, SplitRequest(counts=(30, 0, 10), seed=1))
    again = split(report, SplitRequest(counts=(30, 0, 10), seed=1))
    other = split(report, SplitRequest(counts=(30, 0, 10), seed=2))
    assert first.counts()["validation"] == {"cat": 0, "dog": 0}
    assert first.counts()["test"] == {"cat": 10, "dog": 10}
    assert first.rows == again.rows
    assert first.rows != other.rows


def test_fractions_are_stratified_per_class():
    entries = ([ImageEntry(f"/d/a/{i}.png", "a") for i in range(100)]
               + [ImageEntry(f"/d/b/{i}.png", "b") for i in range(40)])
    report = ScanReport("/d", "folders", ["a", "b"], entries)
    counts = split(report, SplitRequest(fractions=(0.7, 0.15, 0.15), seed=3)).counts()
    assert counts["train"] == {"a": 70, "b": 28}
    assert counts["validation"] == {"a": 15, "b": 6}
    assert counts["test"] == {"a": 15, "b": 6}


def test_too_few_images_names_the_class_and_numbers():
    report = _sorted_report(4000)
    report.images = [e for e in report.images if not (e.label == "dog" and
                                                      int(Path(e.path).name.split(".")[1]) >= 3500)]
    with pytest.raises(NotEnoughImagesError) as info:
        split(report, SplitRequest(preset="chapter"))
    message = str(info.value)
    assert "'dog'" in message and "3500" in message and "2000/1000/1000" in message


def test_bad_requests_are_refused():
    with pytest.raises(DatasetError):
        SplitRequest(preset="chapter", counts=(1, 1, 1))
    with pytest.raises(DatasetError):
        SplitRequest(fractions=(0.8, 0.2, 0.2))
    with pytest.raises(DatasetError):
        SplitRequest(preset="huge")


def test_manifest_round_trip_and_folder_layout(folder_dataset, workspace, tmp_path):
    manifest = split(scan(folder_dataset), SplitRequest(counts=(6, 3, 3), seed=0))
    path = manifest.save(workspace)
    data = json.loads(path.read_text())
    assert {f["split"] for f in data["files"]} == {"train", "validation", "test"}
    loaded = load_manifest(path)
    assert loaded.rows == manifest.rows and loaded.classes == manifest.classes
    paths, labels = loaded.files("train")
    assert len(paths) == 18 and sorted(set(labels)) == [0, 1, 2]
    out = lay_out(loaded, tmp_path / "small")
    linked = sorted(p.name for p in (out / "test" / "red").iterdir())
    assert linked == sorted(Path(p).name for p, name, s in loaded.rows
                            if s == "test" and name == "red")
    assert Image.open(out / "test" / "red" / linked[0]).size == (32, 32)


def test_a_saved_manifest_is_the_indented_json_of_its_rows(workspace):
    """The manifest is written piece by piece (its memory stays small at 100,000 photos): the
    same indented text as json.dumps, names outside ASCII included, and it reads back."""
    report = _kaggle_report(7)
    report.images[0] = ImageEntry("/data/chat é☃/cat.0.jpg", "cat")
    manifest = split(report, SplitRequest(fractions=(0.6, 0.2, 0.2), seed=1))
    path = manifest.save(workspace, "indented")
    assert path.read_bytes() == json.dumps(manifest.to_dict(), indent=1).encode()
    assert load_manifest(path).rows == manifest.rows


def test_a_manifest_in_an_older_layout_still_loads(workspace):
    """save writes a layout read line by line; a manifest written otherwise (an older version,
    an editor) is read whole, as before: the same rows, files and fingerprint."""
    manifest = split(_kaggle_report(9), SplitRequest(fractions=(0.6, 0.2, 0.2), seed=1))
    path = manifest.save(workspace, "now")
    data = json.loads(path.read_text())
    del data["dropped"]  # manifests before duplicates were found have none
    older = path.with_name("older.json")
    older.write_text(json.dumps(data, indent=2))
    for saved in (path, older):
        loaded = load_manifest(saved)
        assert loaded.rows == manifest.rows and loaded.classes == manifest.classes
        assert loaded.files("test") == manifest.files("test") and loaded.dropped == []
        assert loaded.fingerprint() == manifest.fingerprint() and loaded.counts() == data["counts"]
    cut = path.with_name("cut.json")  # a manifest cut short in its rows is still refused
    cut.write_text(path.read_text()[:len(path.read_text()) // 2])
    with pytest.raises(DatasetError, match="not a Transfer Lab manifest"):
        load_manifest(cut)


def test_names_come_in_natural_order_without_a_list_of_keys(tmp_path):
    """A folder's names are sorted by numpy over byte keys (compact.natural_order): the order
    of natural_key, digits as numbers, case and leading zeros aside, names outside ASCII too."""
    names = ["img10.jpg", "img2.jpg", "Img3.png", "img1.jpg", "img02b.jpg", "a1b10.jpg",
             "a1b2.jpg", "é3.jpg", "e4.jpg", "x.jpg", "10.jpg", "9.jpg", "cat.100.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    layout, entries = find_images(tmp_path)
    assert [Path(e.path).name for e in entries] == sorted(names, key=natural_key)
    rng = random.Random(0)  # and ties (IMG2, img02, img2) keep the order they came in
    many = ["".join(rng.choice("aB0129._é") for _ in range(rng.randint(0, 9)))
            for _ in range(3000)]
    assert natural_order(many).tolist() == sorted(range(len(many)),
                                                  key=lambda i: natural_key(many[i]))


def test_a_scan_report_reads_as_its_entries(kaggle_dataset):
    """The scan holds its images compactly; read, sliced and pickled they are the entries."""
    report = scan(kaggle_dataset)
    entries = list(report.images)
    assert all(isinstance(entry, ImageEntry) for entry in entries) and len(entries) > 10
    assert report.images == entries and report.images[2:5] == entries[2:5]
    assert report.images[-1] == entries[-1]
    assert pickle.loads(pickle.dumps(report)).images == entries


def test_more_than_256_classes_and_folders_keep_their_labels(tmp_path, workspace):
    """The table stores a photo's folder and label numbers in one byte while they fit, wider
    after: 300 class folders (with 300 sub-folders) scan, split and save with every photo in
    its folder and class."""
    root = tmp_path / "many"
    expected = []
    for k in range(300):
        folder = root / f"class{k}" / ("deeper" if k % 2 else "")
        folder.mkdir(parents=True)
        colour_image(COLOURS["red"], 8, seed=k).save(folder / f"img{k}.png")
        expected.append((str(folder / f"img{k}.png"), f"class{k}"))
    report = scan(root, workers=1)
    assert [(entry.path, entry.label) for entry in report.images] == expected
    assert report.counts() == {f"class{k}": 1 for k in range(300)}
    assert pickle.loads(pickle.dumps(report)).images == report.images
    manifest = split(report, SplitRequest(counts=(1, 0, 0), seed=0))
    rows = [(path, label, "train") for path, label in expected]
    assert list(manifest.rows) == rows
    assert list(load_manifest(manifest.save(workspace)).rows) == rows
    assert manifest.files("train") == ([path for path, _ in expected], list(range(300)))


def test_a_file_that_is_not_a_manifest_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="not a Transfer Lab manifest"):
        load_manifest(bad)
