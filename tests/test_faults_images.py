"""Hostile and unusual image files and folders (issue 11, items 4 and 6): what the scan report
says about each, what reaches the manifest, and that decoding stays within the documented
formats and memory."""

from __future__ import annotations

import io
import json
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

import transfer_core.datasets as datasets
from conftest import colour_image, huge_png_header, make_folder_dataset
from transfer_core.cli import main
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.duplicates import check_and_fingerprint
from transfer_core.errors import DatasetError, ImageError
from transfer_core.images import _to_rgb, check_image, load_array, open_rgb

PROJECT = Path(__file__).resolve().parents[1]
FORMATS_WE_READ = "JPEG, PNG, BMP, GIF, WebP"


def _reasons(report) -> dict[str, str]:
    return {Path(item["path"]).name: item["reason"] for item in report.skipped}


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _png(values: np.ndarray, colour_type: int, depth: int = 16) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit colour): values (H, W[, C])."""
    height, width = values.shape[:2]
    rows = values.astype(">u2" if depth == 16 else "u1").reshape(height, -1).tobytes()
    stride = len(rows) // height
    raw = b"".join(b"\0" + rows[i * stride:(i + 1) * stride] for i in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


# ---- formats: by content, and only the ones we document ----------------------------------

OTHER_FORMATS = ["TIFF", "PCX", "SGI", "TGA", "PPM", "DDS", "ICO", "EPS", "IM", "QOI"]


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_a_format_we_do_not_document_named_jpg_is_skipped_and_named(folder_dataset, fmt):
    (folder_dataset / "red" / "x.jpg").write_bytes(_saved(colour_image((200, 40, 30), 40), fmt))
    report = scan(folder_dataset)
    assert _reasons(report)["x.jpg"] == (f"x.jpg is in {fmt} format; the formats we read are "
                                         f"{FORMATS_WE_READ}: convert it to JPEG or PNG first")
    assert report.counts()["red"] == 12 and report.skipped_counts()["red"] == 1


def test_a_png_named_jpg_is_read_by_its_content(folder_dataset):
    colour_image((200, 40, 30), 40).save(folder_dataset / "red" / "really-a-png.jpg", "PNG")
    report = scan(folder_dataset)
    assert report.skipped == [] and report.counts()["red"] == 13


def test_an_eps_never_reaches_ghostscript(folder_dataset, monkeypatch):
    spawned = []

    def record(*args, **kwargs):
        spawned.append(args)
        raise AssertionError("a process was started")
    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, record)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", record)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")  # as if Ghostscript were installed
    eps = _saved(colour_image((200, 40, 30), 40), "EPS")
    (folder_dataset / "red" / "drawing.jpg").write_bytes(eps)
    assert "drawing.jpg is in EPS format" in _reasons(scan(folder_dataset))["drawing.jpg"]
    with pytest.raises(ImageError, match="upload.jpg is in EPS format"):
        load_array(eps, (32, 32), name="upload.jpg")  # the Predict page's path
    assert spawned == []


def test_pictures_we_do_not_read_are_listed_with_how_to_convert(folder_dataset):
    blue = folder_dataset / "blue"
    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)
    (blue / "IMG_0001.heic").write_bytes(heic)
    (blue / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4"/>')
    colour_image((30, 60, 200), 40).save(blue / "scan.tiff")
    (blue / "DSC_0001.nef").write_bytes(b"II*\0" + bytes(64))
    (blue / "IMG_0002.jpg").write_bytes(heic)  # a HEIC photo renamed by hand
    reasons = _reasons(scan(folder_dataset))
    assert reasons["IMG_0001.heic"].startswith("IMG_0001.heic is a HEIC photo, a format we do "
                                               "not read; convert it to JPEG first")
    assert reasons["logo.svg"].startswith("logo.svg is an SVG drawing, a format we do not read;"
                                          " render it to PNG first")
    assert reasons["scan.tiff"].startswith("scan.tiff is a TIFF image")
    assert reasons["DSC_0001.nef"].startswith("DSC_0001.nef is a camera raw file")
    assert reasons["IMG_0002.jpg"].startswith("IMG_0002.jpg is in HEIC format")
    assert all(FORMATS_WE_READ in reason for reason in reasons.values())


def test_files_that_are_not_pictures_are_counted_not_listed(folder_dataset, capsys):
    red = folder_dataset / "red"
    (red / "notes.txt").write_text("labels by hand")
    (red / "labels.csv").write_text("a,b")
    (red / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder_dataset / "README.md").write_text("my pets")
    report = scan(folder_dataset)
    assert report.skipped == [] and report.ignored == 4
    assert main(["scan", str(folder_dataset), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ignored"] == 4


def test_a_picture_outside_the_class_folders_is_listed(folder_dataset):
    colour_image((1, 2, 3), 40).save(folder_dataset / "stray.png")
    report = scan(folder_dataset)
    assert _reasons(report)["stray.png"] == "stray.png is not inside a class folder"
    assert report.classes == ["blue", "green", "red"]


# ---- 16-bit pictures ---------------------------------------------------------------------

def test_a_16_bit_grayscale_png_keeps_its_brightness(folder_dataset):
    values = np.random.default_rng(0).normal(119 * 257, 40 * 257, (48, 64))
    values = np.clip(values, 0, 65535).astype(np.uint16)
    path = folder_dataset / "green" / "depth16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    pixels = load_array(path)
    assert pixels.shape == (48, 64, 3)
    assert abs(pixels.mean() - values.mean() / 257) < 1.0  # was 255: all white
    assert pixels.std() > 30  # the picture, not a flat grey
    assert scan(folder_dataset).counts()["green"] == 13


@pytest.mark.parametrize("colour_type, channels", [(0, 1), (2, 3), (4, 2), (6, 4)],
                         ids=["gray", "rgb", "gray+alpha", "rgba"])
def test_every_16_bit_png_layout_is_scaled_to_8_bits(colour_type, channels):
    rng = np.random.default_rng(colour_type)
    shape = (30, 40) if channels == 1 else (30, 40, channels)
    values = rng.integers(0, 65536, shape).astype(np.uint16)
    if channels in (2, 4):
        values[..., -1] = 65535  # opaque, so the colours show as they are
    colours = values if channels == 1 else values[..., :max(1, channels - 1)]
    pixels = load_array(_png(values, colour_type), name="sixteen.png")
    assert abs(pixels.mean() - colours.mean() / 257) < 1.0


def _sixteen_bit_ramps() -> dict[str, Image.Image]:
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    return {"I;16": Image.fromarray(ramp),
            "I;16B": Image.frombytes("I;16B", (64, 64), ramp.astype(">u2").tobytes()),
            "I": Image.fromarray(ramp.astype(np.int32))}


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_each_16_bit_mode_pillow_may_give_is_scaled(mode):
    image = _sixteen_bit_ramps()[mode]
    assert image.mode == mode
    rgb = np.asarray(_to_rgb(image))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[-1, -1].tolist() == [255, 255, 255]
    assert abs(rgb.mean() - 127.5) < 1.0


# ---- memory: a pixel limit before decoding, draft mode for JPEG ---------------------------

def test_a_picture_over_the_pixel_limit_is_refused_before_decoding(folder_dataset):
    huge_png_header(folder_dataset / "red" / "poster.png", width=8000, height=7000)  # 56 Mpx
    reason = _reasons(scan(folder_dataset))["poster.png"]
    # The header has no pixel data: any attempt to decode would say "truncated" instead.
    assert reason == ("poster.png is too large (8000×7000 = 56.0 megapixels; the limit is 52, "
                      "set TRANSFER_LAB_MAX_MEGAPIXELS to change it)")


def test_the_pixel_limit_is_set_by_an_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    colour_image((1, 2, 3), 40).save(path)  # 1,600 pixels
    monkeypatch.setenv("TRANSFER_LAB_MAX_MEGAPIXELS", "0.001")
    assert "the limit is 0.001" in check_image(path)
    monkeypatch.setenv("TRANSFER_LAB_MAX_MEGAPIXELS", "lots")
    assert "TRANSFER_LAB_MAX_MEGAPIXELS must be a number of megapixels" in check_image(path)
    monkeypatch.setenv("TRANSFER_LAB_MAX_MEGAPIXELS", "0.002")
    assert check_image(path) is None


PEAK_PROBE = """
import resource, sys
from transfer_core.images import check_image, load_array
load_array(sys.argv[2], (8, 8))  # libraries loaded and warmed before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[3] == "check":
    assert check_image(sys.argv[1]) is None
else:
    assert load_array(sys.argv[1], (224, 224)).shape == (224, 224, 3)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def _peak_mb(path: Path, small: Path, how: str) -> float:
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(path), str(small), how],
                          env={"PYTHONPATH": str(PROJECT)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


def test_decoding_a_large_picture_costs_a_bounded_amount_of_memory(tmp_path):
    small = tmp_path / "small.png"
    colour_image((1, 2, 3), 16).save(small)
    rgba = tmp_path / "rgba.png"  # 16 Mpx of RGBA that compresses to a few hundred KB
    Image.new("RGBA", (4000, 4000), (10, 200, 30, 128)).save(rgba)
    photo = tmp_path / "photo.jpg"  # a 12 Mpx phone photo
    Image.new("RGB", (4000, 3000), (120, 90, 60)).save(photo, quality=90)
    # RGBA: the check holds the decoded 4 bytes a pixel and nothing more (before: 12.4);
    # training adds the 3 of the RGB picture (the 224² copy is tiny).
    megapixels = 16
    assert _peak_mb(rgba, small, "check") < megapixels * 4 * 1.25
    assert _peak_mb(rgba, small, "train") < megapixels * 7 * 1.25
    # JPEG for a 224² input decodes at 1/8 scale (0.6 MB of pixels, not 36 MB).
    assert _peak_mb(photo, small, "train") < 8


def test_draft_mode_gives_the_same_picture_at_the_input_size(tmp_path):
    path = tmp_path / "big.jpg"
    colour_image((200, 120, 40), 64).resize((1792, 1792), Image.BILINEAR).save(path, quality=95)
    reduced = load_array(path, (224, 224)).astype(float)
    full = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.abs(reduced - full).mean() < 3  # same picture, within JPEG rounding


def test_a_display_copy_keeps_the_aspect_ratio(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (1600, 800), (9, 9, 9)).save(path)
    assert open_rgb(path, max_side=160).size == (160, 80)


# ---- links and allowed roots -------------------------------------------------------------

@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder of photos the app must never read."""
    return make_folder_dataset(tmp_path / "outside", per_class=3, classes=("red",))


@pytest.fixture
def pets(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "allowed" / "pets", per_class=4,
                               classes=("red", "blue"))


def test_links_out_of_the_allowed_folders_are_skipped_never_read(pets, outside, tmp_path,
                                                                monkeypatch, workspace):
    (pets / "wolf").symlink_to(outside / "red", target_is_directory=True)
    (pets / "red" / "stolen.png").symlink_to(outside / "red" / "red_0.png")
    checked = []
    monkeypatch.setattr(datasets, "check_and_fingerprint",
                        lambda path: checked.append(path) or check_and_fingerprint(path))
    report = scan(pets, roots=[tmp_path / "allowed"])
    reasons = _reasons(report)
    assert reasons["wolf"] == "wolf links outside the allowed folders"
    assert reasons["stolen.png"] == "stolen.png links outside the allowed folders"
    assert report.counts() == {"blue": 4, "red": 4, "wolf": 0}
    assert not any(str(outside) in path for path in checked)
    manifest = split(report, SplitRequest(counts=(2, 1, 1))).save(workspace)
    assert str(outside) not in manifest.read_text()
    assert "stolen" not in manifest.read_text()


def test_without_roots_links_are_followed(pets, outside):
    (pets / "wolf").symlink_to(outside / "red", target_is_directory=True)
    assert scan(pets).counts() == {"blue": 4, "red": 4, "wolf": 3}


def test_a_chosen_folder_that_resolves_outside_is_refused(pets, outside, tmp_path):
    (tmp_path / "allowed" / "shortcut").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match="outside the folders this app may read"):
        scan(tmp_path / "allowed" / "shortcut", roots=[tmp_path / "allowed"])


def test_a_lone_link_out_is_not_descended_into(outside, tmp_path):
    (tmp_path / "allowed" / "zip").mkdir(parents=True)
    (tmp_path / "allowed" / "zip" / "PetImages").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match="PetImages links outside the allowed folders"):
        scan(tmp_path / "allowed" / "zip", roots=[tmp_path / "allowed"])


@pytest.fixture
def time_limit():
    def fail(*_):
        raise TimeoutError("the scan did not finish: a link loop?")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_link_loops_end_and_nothing_is_counted_twice(pets, time_limit):
    (pets / "red" / "again").symlink_to(pets, target_is_directory=True)
    (pets / "blue" / "nested").mkdir()
    (pets / "blue" / "nested" / "up").symlink_to(pets / "blue", target_is_directory=True)
    (pets / "red" / "a.jpg").symlink_to(pets / "red" / "b.jpg")
    (pets / "red" / "b.jpg").symlink_to(pets / "red" / "a.jpg")
    report = scan(pets, roots=[pets.parent])
    reasons = _reasons(report)
    assert report.counts() == {"blue": 4, "red": 4}
    assert reasons["again"] == "again links to a folder already read"
    assert reasons["up"] == "up links to a folder already read"
    assert "leads nowhere" in reasons["a.jpg"] and "leads nowhere" in reasons["b.jpg"]


# ---- bad path strings --------------------------------------------------------------------

@pytest.mark.parametrize("path, message", [
    ("/data/pets\0/cats", "contains a NUL byte"),
    ("/" + "x" * 5000, "is too long (5,001 characters)"),
    ("/" + "deep/" * 1000, "is too long"),
    ("", "No folder given"),
    ("/no/such/folder", "There is no folder /no/such/folder"),
])
def test_a_bad_path_string_is_one_line(path, message):
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        scan(path, roots=[Path("/data")])
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_a_file_is_not_a_folder(tmp_path, capsys):
    path = tmp_path / "photo.png"
    colour_image((1, 2, 3)).save(path)
    assert main(["scan", str(path)]) == 1
    assert capsys.readouterr().err.strip().endswith("photo.png is a file, not a folder of images.")
    assert main(["scan", "/x\0y"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
