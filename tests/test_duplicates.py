"""Duplicates and leaks: planted exact, resized and re-compressed copies are found, distinct
photos (also similar-looking ones) are not, and dropping a copy is recorded in the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from conftest import COLOURS, colour_image
from transfer_core.cli import main
from transfer_core.datasets import Manifest, drop_later_copies, load_manifest, scan
from transfer_core.duplicates import (NEAR_BITS, DuplicatePair, later_copies, locate,
                                      perceptual_hash, summary)


def scene(seed: int, size=(160, 120)) -> Image.Image:
    """A photo-like picture: a random background with blurred shapes, different for each seed."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(7):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(15, 80, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x), int(y), int(x + w), int(y + h)],
              fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(1.5))


def resized(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((int(image.width * scale), int(image.height * scale)), Image.BILINEAR)


@pytest.fixture
def planted(tmp_path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """Two classes of distinct scenes, a class of similar-looking colour patches (distinct
    pictures whose perceptual hashes coincide), and four planted copies: {name: (original,
    copy)} as paths relative to the root."""
    root = tmp_path / "planted"
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            scene(100 * c + i).save(root / name / f"{name}_{i}.jpg", quality=92)
    (root / "patches").mkdir()
    for i in range(8):
        colour_image(COLOURS["red"], 128, seed=i).save(root / "patches" / f"patch_{i}.png")
    shutil.copy(root / "cats/cats_0.jpg", root / "cats/z_exact.jpg")
    resized(Image.open(root / "cats/cats_1.jpg"), 0.5).save(root / "cats/z_half.jpg",
                                                           quality=90)
    Image.open(root / "dogs/dogs_2.jpg").save(root / "dogs/z_q30.jpg", quality=30)
    resized(Image.open(root / "dogs/dogs_3.jpg"), 1.7).save(root / "dogs/z_big.png")
    return root, {"exact": ("cats/cats_0.jpg", "cats/z_exact.jpg"),
                  "half": ("cats/cats_1.jpg", "cats/z_half.jpg"),
                  "q30": ("dogs/dogs_2.jpg", "dogs/z_q30.jpg"),
                  "big": ("dogs/dogs_3.jpg", "dogs/z_big.png")}


def _pairs(report, root) -> dict[tuple[str, str], str]:
    def rel(path):
        return str(Path(path).relative_to(root))
    return {(rel(p.first), rel(p.second)): p.kind for p in report.duplicates}


def test_planted_copies_are_found_and_distinct_photos_are_not(planted):
    root, copies = planted
    report = scan(root)
    assert _pairs(report, root) == {copies["exact"]: "exact", copies["half"]: "near",
                                    copies["q30"]: "near", copies["big"]: "near"}


def test_similar_looking_patches_share_a_hash_but_are_not_copies(planted):
    """The patches would all pair up on the hash alone: the grey pictures' correlation is
    what keeps them apart, while a re-compressed patch is still caught."""
    root, _ = planted
    hashes = [perceptual_hash(Image.open(p))[0] for p in (root / "patches").iterdir()]
    close = [a for i, a in enumerate(hashes) for b in hashes[i + 1:]
             if (a ^ b).bit_count() <= NEAR_BITS]
    assert close  # distinct patches whose hashes alone would call them copies
    Image.open(root / "patches/patch_5.png").save(root / "patches/z_copy.jpg", quality=60)
    pairs = _pairs(scan(root), root)
    assert pairs[("patches/patch_5.png", "patches/z_copy.jpg")] == "near"
    assert not [pair for pair in pairs if "patch_" in pair[1]]


def _manifest(report, root, where: dict[str, str]) -> Manifest:
    """Every usable photo in train, except those named in `where` (relative path → split)."""
    rows = [(e.path, e.label, where.get(str(Path(e.path).relative_to(root)), "train"))
            for e in report.images]
    return Manifest(str(root), report.classes, rows, {"counts": [1, 1, 1]})


def test_leaks_across_splits_are_counted_and_the_later_copy_is_dropped(planted, workspace):
    root, copies = planted
    report = scan(root)
    # The resized copy sits in test with its original in train; the original of the
    # re-compressed copy sits in validation, the copy in train; the exact pair in train.
    manifest = _manifest(report, root, {copies["half"][1]: "test", copies["q30"][0]: "validation",
                                        copies["big"][1]: "validation"})
    found = summary(locate(report.duplicates, manifest.rows))
    assert (found["exact"], found["near"], found["leaks"]) == (1, 3, 3)
    located = {Path(p["second"]).name: p for p in found["pairs"]}
    assert (located["z_half.jpg"]["first_split"], located["z_half.jpg"]["second_split"]) == (
        "train", "test")
    assert located["z_exact.jpg"]["leak"] is False

    cleaned = drop_later_copies(manifest, report.duplicates)
    dropped = {Path(d["path"]).name: d for d in cleaned.dropped}
    # The later copy goes: the one in the later split (the original dogs_2 in validation,
    # not its copy in train), else the later one in the split's order.
    assert set(dropped) == {"z_exact.jpg", "z_half.jpg", "dogs_2.jpg", "z_big.png"}
    assert dropped["dogs_2.jpg"]["copy_of"].endswith("z_q30.jpg")
    assert dropped["z_half.jpg"]["reason"].startswith("near copy")
    assert dropped["z_half.jpg"]["reason"].endswith("of cats_1.jpg (train)")
    assert dropped["z_exact.jpg"]["kind"] == "exact"
    assert len(cleaned.rows) == len(manifest.rows) - 4
    assert not summary(locate(report.duplicates, cleaned.rows))["leaks"]
    assert cleaned.fingerprint() != manifest.fingerprint()

    saved = load_manifest(cleaned.save(workspace, "clean"))
    assert saved.dropped == cleaned.dropped and saved.rows == cleaned.rows


def test_in_a_chain_only_the_copies_of_kept_photos_go():
    """a ≈ b and b ≈ c, but a and c differ: b goes (a copy of a), c stays (its only copy
    is gone)."""
    rows = [("a", "x", "train"), ("b", "x", "validation"), ("c", "x", "test")]
    pairs = [DuplicatePair("a", "b", "near", 4), DuplicatePair("b", "c", "near", 4)]
    assert set(later_copies(pairs, rows, ("train", "validation", "test"))) == {"b"}


def test_a_manifest_written_before_dropping_existed_loads(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": 1, "root": "/data", "classes": ["a", "b"],
                                "request": {"preset": "chapter"},
                                "files": [{"path": "/data/a.1.jpg", "label": "a",
                                           "split": "train"}]}))
    manifest = load_manifest(path)
    assert manifest.dropped == [] and manifest.rows == [("/data/a.1.jpg", "a", "train")]


def test_scan_and_split_json_report_the_pairs_and_split_drops_on_request(planted, workspace,
                                                                           capsys):
    root, _ = planted

    def run(*argv):
        assert main([*argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    scanned = run("scan", str(root))
    assert (scanned["duplicates"]["exact"], scanned["duplicates"]["near"]) == (1, 3)
    kept = run("split", str(root), "--counts", "4,2,2", "--seed", "3", "--name", "kept")
    assert kept["dropped"] == [] and len(kept["duplicates"]["pairs"]) == 4
    leaks = kept["duplicates"]["leaks"]
    assert leaks == sum(p["first_split"] != p["second_split"] for p in kept["duplicates"]["pairs"]
                        if p["first_split"] and p["second_split"])
    dropped = run("split", str(root), "--counts", "4,2,2", "--seed", "3", "--name", "dropped",
                  "--drop-duplicates")
    in_both = [p for p in dropped["duplicates"]["pairs"] if p["first_split"] and p["second_split"]]
    assert len(dropped["dropped"]) == len(in_both) > 0
    assert load_manifest(dropped["manifest"]).dropped == dropped["dropped"]
