"""Where datasets come from: the demo set, safe unzipping, resumable downloads (served locally)."""

from __future__ import annotations

import io
import os
import socket
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from local_site import serving
from PIL import Image

from transfer_core.errors import ArchiveError, DatasetError, DownloadError
from transfer_core.sources import (download, extract_zip, make_demo_dataset,
                                   prepare_dogs_vs_cats)

CLASSES = ("sunsets", "forests", "oceans")


# ------------------------------------------------------------------------------ the demo set


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_demo_set_has_one_folder_of_jpegs_per_class(tmp_path):
    dest = make_demo_dataset(tmp_path / "demo", per_class=5, size=48)

    assert dest == tmp_path / "demo"
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == sorted(CLASSES)
    for name in CLASSES:
        files = sorted((dest / name).iterdir())
        assert [f.name for f in files] == [f"{name}_{i:03d}.jpg" for i in range(5)]
        with Image.open(files[0]) as image:
            assert (image.format, image.size, image.mode) == ("JPEG", (48, 48), "RGB")
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"], "no staging folder is left"


def test_demo_set_is_deterministic_per_seed(tmp_path):
    first = _files(make_demo_dataset(tmp_path / "a", per_class=4, size=48, seed=7))
    again = _files(make_demo_dataset(tmp_path / "b", per_class=4, size=48, seed=7))
    other = _files(make_demo_dataset(tmp_path / "c", per_class=4, size=48, seed=8))

    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_demo_classes_differ_in_colour_and_images_vary(tmp_path):
    dest = make_demo_dataset(tmp_path / "demo", per_class=12, size=48)
    means = {}
    for name in CLASSES:
        pixels = np.stack([np.asarray(Image.open(p), dtype=float)
                           for p in sorted((dest / name).glob("*.jpg"))])
        means[name] = pixels.mean(axis=(1, 2))  # per image, per channel
        assert len({p.tobytes() for p in pixels.astype(np.uint8)}) == 12, "every picture differs"

    red, green, blue = 0, 1, 2
    assert (means["sunsets"][:, red] > means["sunsets"][:, blue] + 40).all()
    assert (means["forests"][:, green] > means["forests"][:, [red, blue]].max(axis=1) + 25).all()
    assert (means["oceans"][:, blue] > means["oceans"][:, [red, green]].max(axis=1) + 25).all()
    # Nearest class-mean colour classifies every picture: the classes do not overlap.
    centres = np.stack([means[name].mean(axis=0) for name in CLASSES])
    for label, name in enumerate(CLASSES):
        distances = np.linalg.norm(means[name][:, None, :] - centres[None], axis=2)
        assert (distances.argmin(axis=1) == label).all()


def test_demo_second_call_reuses_a_complete_set_and_redraws_on_new_arguments(tmp_path):
    dest = make_demo_dataset(tmp_path / "demo", per_class=3, size=32)
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*.jpg")}
    os.utime(next(iter(stamps)), ns=(1, 1))  # a redraw would overwrite this stamp
    stamps[next(iter(stamps))] = 1

    make_demo_dataset(tmp_path / "demo", per_class=3, size=32)
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*.jpg")} == stamps

    make_demo_dataset(tmp_path / "demo", per_class=2, size=32)
    assert sorted(p.name for p in (dest / "oceans").iterdir()) == ["oceans_000.jpg",
                                                                   "oceans_001.jpg"]


def test_demo_set_redraws_a_set_missing_files(tmp_path):
    dest = make_demo_dataset(tmp_path / "demo", per_class=3, size=32)
    (dest / "forests" / "forests_001.jpg").unlink()

    make_demo_dataset(tmp_path / "demo", per_class=3, size=32)
    assert (dest / "forests" / "forests_001.jpg").is_file()


def test_demo_set_never_replaces_a_folder_of_other_files(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")

    with pytest.raises(DatasetError, match="already holds other files"):
        make_demo_dataset(tmp_path / "photos", per_class=2, size=32)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"


def test_demo_set_rejects_unknown_class_names(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        make_demo_dataset(tmp_path / "demo", classes=("sunsets", "deserts"))


# ------------------------------------------------------------------------------ zip archives


def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _only(tmp_path: Path, *names: str) -> bool:
    """Nothing but `names` in tmp_path: no half-unpacked or staging folder left behind."""
    return sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_zip_with_class_folders_unpacks_into_dest(tmp_path):
    archive = _zip(tmp_path / "pets.zip", {
        "cats/1.jpg": b"cat one", "cats/2.jpg": b"cat two", "dogs/1.jpg": b"dog one",
        "__MACOSX/cats/1.jpg": b"mac junk", "cats/.DS_Store": b"finder junk"})

    result = extract_zip(archive, tmp_path / "out")

    assert result == tmp_path / "out"
    assert {str(p.relative_to(result)): p.read_bytes() for p in result.rglob("*") if p.is_file()} \
        == {"cats/1.jpg": b"cat one", "cats/2.jpg": b"cat two", "dogs/1.jpg": b"dog one"}
    assert _only(tmp_path, "pets.zip", "out")


def test_zip_with_one_top_folder_returns_that_folder_also_from_an_upload(tmp_path):
    buffer = io.BytesIO()
    _zip(buffer, {"cats_dogs/cats/1.jpg": b"c", "cats_dogs/dogs/1.jpg": b"d",
                  "__MACOSX/cats_dogs/cats/1.jpg": b"junk"})
    buffer.seek(0)
    buffer.name = "cats_dogs.zip"  # as Streamlit's UploadedFile has

    result = extract_zip(buffer, tmp_path / "cats_dogs_upload")

    assert result == tmp_path / "cats_dogs_upload" / "cats_dogs"
    assert (result / "dogs" / "1.jpg").read_bytes() == b"d"


@pytest.mark.parametrize("entry", ["../evil.txt", "cats/../../evil.txt", "C:\\evil.txt",
                                   "C:/evil.txt", "..\\evil.txt", "ABSOLUTE"])
def test_zip_entries_that_escape_dest_are_refused_and_nothing_is_written(tmp_path, entry):
    target = tmp_path / "outside" / "evil.txt"
    if entry == "ABSOLUTE":
        entry = str(target)
    archive = _zip(tmp_path / "bad.zip", {"cats/1.jpg": b"fine", entry: b"pwned"})

    with pytest.raises(ArchiveError, match="outside the destination") as raised:
        extract_zip(archive, tmp_path / "unpacked" / "out")

    assert repr(entry) in str(raised.value)
    assert not target.exists() and not (tmp_path / "evil.txt").exists()
    assert _only(tmp_path, "bad.zip")


def test_zip_symlink_entry_is_refused(tmp_path):
    link = zipfile.ZipInfo("cats/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "links.zip", "w") as archive:
        archive.writestr("cats/1.jpg", b"fine")
        archive.writestr(link, "/etc/passwd")

    with pytest.raises(ArchiveError, match="symbolic link 'cats/link.jpg'"):
        extract_zip(tmp_path / "links.zip", tmp_path / "out")
    assert _only(tmp_path, "links.zip")


@pytest.mark.parametrize("damage", ["not a zip", "truncated"])
def test_corrupt_archive_is_reported_as_not_a_valid_zip(tmp_path, damage):
    good = _zip(tmp_path / "good.zip", {"cats/1.jpg": os.urandom(5000)}).read_bytes()
    data = b"this is a text file, not a zip" if damage == "not a zip" else good[:len(good) // 2]
    (tmp_path / "broken.zip").write_bytes(data)

    with pytest.raises(ArchiveError, match="broken.zip is not a valid zip archive"):
        extract_zip(tmp_path / "broken.zip", tmp_path / "out")
    assert _only(tmp_path, "good.zip", "broken.zip")


def test_damaged_entry_mid_archive_leaves_nothing_half_written(tmp_path):
    archive = _zip(tmp_path / "pets.zip", {"cats/1.jpg": b"a" * 1000,
                                           "dogs/1.jpg": os.urandom(20_000)})
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        second = z.getinfo("dogs/1.jpg")
        payload_at = second.header_offset + 30 + len(second.filename) + len(second.extra)
    data[payload_at + 100: payload_at + 200] = bytes(100)  # corrupt the second file's bytes
    archive.write_bytes(bytes(data))

    with pytest.raises(ArchiveError, match="'dogs/1.jpg' is damaged"):
        extract_zip(archive, tmp_path / "out")
    assert _only(tmp_path, "pets.zip"), "the first file was unpacked, then removed with the rest"


def test_archive_over_the_limits_is_refused_before_unpacking(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"cats/{i}.jpg": b"x" * 100 for i in range(5)})

    with pytest.raises(ArchiveError, match="holds 5 files, more than the limit of 4"):
        extract_zip(archive, tmp_path / "out", max_files=4)
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_zip(archive, tmp_path / "out", max_bytes=499)
    assert _only(tmp_path, "many.zip")
    assert extract_zip(archive, tmp_path / "out", max_files=5, max_bytes=500).is_dir()


def test_zip_never_overwrites_an_existing_folder(tmp_path):
    archive = _zip(tmp_path / "pets.zip", {"cats/1.jpg": b"new"})
    (tmp_path / "out" / "cats").mkdir(parents=True)
    (tmp_path / "out" / "cats" / "1.jpg").write_bytes(b"old")

    with pytest.raises(ArchiveError, match="already exists"):
        extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "cats" / "1.jpg").read_bytes() == b"old"


# ------------------------------------------------------------------------------ downloads


@pytest.fixture
def site():
    with serving() as site:
        yield site


PAYLOAD = os.urandom(300_000)


def test_download_writes_the_file_and_reports_growing_progress(tmp_path, site):
    site.files["/data.bin"] = PAYLOAD
    calls = []

    path = download(f"{site.url}/data.bin", tmp_path / "data.bin",
                    progress=lambda done, total: calls.append((done, total)), chunk_size=50_000)

    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) >= 6 and done[-1] == len(PAYLOAD)
    assert {total for _, total in calls} == {len(PAYLOAD)}


def test_interrupted_download_keeps_the_part_and_resumes(tmp_path, site):
    site.files["/data.bin"] = PAYLOAD
    site.drop_next_after = 120_000
    dest = tmp_path / "data.bin"

    with pytest.raises(DownloadError, match="the partial file is kept and the download resumes"):
        download(f"{site.url}/data.bin", dest, chunk_size=16_384, timeout=5)
    assert not dest.exists()
    assert (tmp_path / "data.bin.part").stat().st_size == 120_000

    calls = []
    download(f"{site.url}/data.bin", dest, progress=lambda d, t: calls.append((d, t)),
             chunk_size=16_384, timeout=5)

    assert dest.read_bytes() == PAYLOAD
    assert site.requests[-1] == ("/data.bin", "bytes=120000-"), "only the rest was fetched"
    assert calls[0] == (120_000, len(PAYLOAD))
    assert not (tmp_path / "data.bin.part").exists()


def test_server_that_ignores_range_makes_the_download_start_over(tmp_path, site):
    site.files["/data.bin"] = PAYLOAD
    site.ranges = False
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from another file" * 100)

    download(f"{site.url}/data.bin", tmp_path / "data.bin", timeout=5)

    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_part_that_is_already_complete_is_finished_without_refetching(tmp_path, site):
    site.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)

    download(f"{site.url}/data.bin", tmp_path / "data.bin", timeout=5)

    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert site.requests == [("/data.bin", f"bytes={len(PAYLOAD)}-")]


def test_finished_download_is_not_fetched_again(tmp_path, site):
    (tmp_path / "data.bin").write_bytes(b"done earlier")

    assert download(f"{site.url}/data.bin", tmp_path / "data.bin").read_bytes() == b"done earlier"
    assert site.requests == []


def test_unreachable_server_gives_a_download_error(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DownloadError, match="Check the internet connection"):
        download(f"http://127.0.0.1:{port}/data.bin", tmp_path / "data.bin", timeout=5)
    assert not (tmp_path / "data.bin").exists()


def test_missing_file_on_the_server_names_the_http_status(tmp_path, site):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{site.url}/nothing.zip", tmp_path / "nothing.zip", timeout=5)


def test_only_web_addresses_are_downloaded(tmp_path):
    (tmp_path / "secret.txt").write_text("local file")
    with pytest.raises(DownloadError, match="only http:// and https://"):
        download(f"file://{tmp_path / 'secret.txt'}", tmp_path / "copy.txt")
    assert not (tmp_path / "copy.txt").exists()


# ------------------------------------------------------------------------------ Dogs vs. Cats


def _pet_images_zip() -> bytes:
    buffer = io.BytesIO()
    _zip(buffer, {"PetImages/Cat/0.jpg": b"cat 0", "PetImages/Cat/1.jpg": b"cat 1",
                  "PetImages/Dog/0.jpg": b"dog 0", "PetImages/Dog/Thumbs.db": b"windows",
                  "readme[1].txt": b"read me", "CDLA-Permissive-2.0.pdf": b"%PDF licence"})
    return buffer.getvalue()


def test_prepare_dogs_vs_cats_downloads_unpacks_and_finds_the_class_folders(tmp_path, site):
    site.files["/kagglecatsanddogs_5340.zip"] = _pet_images_zip()
    url = f"{site.url}/kagglecatsanddogs_5340.zip"
    calls = []

    folder = prepare_dogs_vs_cats(tmp_path / "ws", progress=lambda d, t: calls.append(d), url=url)

    assert folder == tmp_path / "ws" / "datasets" / "dogs_vs_cats" / "PetImages"
    assert sorted(p.name for p in (folder / "Cat").iterdir()) == ["0.jpg", "1.jpg"]
    assert (folder / "Dog" / "0.jpg").read_bytes() == b"dog 0"
    assert calls[-1] == len(site.files["/kagglecatsanddogs_5340.zip"])
    assert sorted(p.name for p in (tmp_path / "ws" / "datasets").iterdir()) == ["dogs_vs_cats"]

    assert prepare_dogs_vs_cats(tmp_path / "ws", url=url) == folder
    assert len(site.requests) == 1, "a prepared dataset is not downloaded again"


def test_prepare_dogs_vs_cats_rejects_an_archive_without_cat_and_dog(tmp_path, site):
    buffer = io.BytesIO()
    _zip(buffer, {"photos/a.jpg": b"a"})
    site.files["/other.zip"] = buffer.getvalue()

    with pytest.raises(DatasetError, match="has no Cat/ and Dog/ folders"):
        prepare_dogs_vs_cats(tmp_path / "ws", url=f"{site.url}/other.zip")


def test_prepare_dogs_vs_cats_discards_a_web_page_served_instead_of_the_zip(tmp_path, site):
    site.files["/pets.zip"] = b"<html>Please log in to the hotel wifi</html>"

    with pytest.raises(DownloadError, match="not a zip archive"):
        prepare_dogs_vs_cats(tmp_path / "ws", url=f"{site.url}/pets.zip")
    assert list((tmp_path / "ws" / "datasets").iterdir()) == [], "the next call downloads again"
