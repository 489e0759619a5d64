"""The Dataset page's "Download Dogs vs Cats" source, for real, against a web server on
127.0.0.1: progress, an interrupted transfer that resumes, a corrupt archive, and a zip with
`../` entries. The page's call into transfer_core.sources is pointed at the local server.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

# The helpers, and the `frame` and `workspace` fixtures, of the other AppTest module.
from test_app import (assert_no_exception, button, files_under, frame, open_page,  # noqa: F401
                      texts, usable_counts, workspace)
from local_site import serving
from transfer_core import sources

ARCHIVE = "/kagglecatsanddogs_5340.zip"


@pytest.fixture
def site(monkeypatch):
    """A local web server; the page's "Download and unpack" fetches ARCHIVE from it, and every
    progress call the page receives is recorded in `site.progress`."""
    with serving() as site:
        yield from _redirected_to(site, monkeypatch)


def _redirected_to(site, monkeypatch):
    original = sources.prepare_dogs_vs_cats

    def from_local_server(workspace, progress=None, url=None):
        def record(done, total):
            site.progress.append((done, total))
            if progress:
                progress(done, total)
        return original(workspace, progress=record, url=site.url + ARCHIVE)

    # prepare_dogs_vs_cats took DOGS_VS_CATS_URL as its default argument at import, so the
    # constant alone would still send the page to Microsoft: the call is redirected as well.
    monkeypatch.setattr(sources, "DOGS_VS_CATS_URL", site.url + ARCHIVE)
    monkeypatch.setattr(sources, "prepare_dogs_vs_cats", from_local_server)
    yield site


def noisy_jpeg(rgb, seed: int, size=200) -> bytes:
    """A photo-sized JPEG of noise around a colour: tens of kB that do not compress."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.normal(0, 60, (size, size, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def pet_images_zip(extra: dict[str, bytes] | None = None, per_class=30) -> bytes:
    """Microsoft's layout (PetImages/Cat and PetImages/Dog, a readme beside them),
    with one corrupt photo as the real archive has."""
    entries = {f"PetImages/{name}/{i}.jpg": noisy_jpeg(rgb, 100 * c + i)
               for c, (name, rgb) in enumerate([("Cat", (200, 120, 60)), ("Dog", (60, 90, 200))])
               for i in range(per_class)}
    entries["PetImages/Cat/666.jpg"] = b"\xff\xd8\xff\xe0 truncated"
    entries["PetImages/Dog/Thumbs.db"] = b"windows"
    entries["readme[1].txt"] = b"read me"
    entries.update(extra or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def press_download(at):
    button(at, "Download and unpack").click().run()
    assert_no_exception(at)
    return at


def download_page():
    at = open_page("dataset")
    at.radio(key="source").set_value("Download Dogs vs Cats").run()
    assert_no_exception(at)
    return at


def test_download_shows_progress_unpacks_and_scans(workspace, site):
    data = site.files[ARCHIVE] = pet_images_zip()
    assert len(data) > 2 * 2**20, "big enough for several progress steps"

    at = press_download(download_page())

    assert not at.error
    done = [d for d, _ in site.progress]
    assert done == sorted(done) and len(set(done)) >= 3 and done[-1] == len(data)
    assert {total for _, total in site.progress} == {len(data)}
    [bar] = at.progress
    mb = len(data) / 2**20
    assert (bar.value, bar.text) == (100, f"{mb:.0f} of {mb:.0f} MB")

    assert usable_counts(at) == {"Cat": "30 usable", "Dog": "30 usable"}
    assert {m.label: m.delta for m in at.metric} == {"Cat": "1 skipped", "Dog": ""}
    folder = workspace / "datasets" / "dogs_vs_cats" / "PetImages"
    assert f"{folder} · one folder per class" in " ".join(texts(at.caption))
    assert sorted(p.name for p in (workspace / "datasets").iterdir()) == ["dogs_vs_cats"], \
        "the archive is deleted once unpacked"

    button(at, "Save this split").click().run()
    assert len(list((workspace / "manifests").glob("*.json"))) == 1

    at = press_download(download_page())  # a second press finds the folder
    assert len(site.requests) == 1 and usable_counts(at)["Dog"] == "30 usable"


def test_interrupted_download_says_so_and_the_next_press_resumes(workspace, site):
    data = site.files[ARCHIVE] = pet_images_zip()
    site.drop_next_after = 1_500_000

    at = press_download(download_page())

    [message] = texts(at.error)
    assert f"the connection closed after 1,500,000 of {len(data):,} bytes" in message
    assert "the partial file is kept and the download resumes" in message
    assert not at.metric, "nothing to scan yet"
    assert (workspace / "datasets" / (ARCHIVE[1:] + ".part")).stat().st_size == 1_500_000

    site.progress.clear()
    press_download(at)

    assert not at.error
    assert site.requests[-1] == (ARCHIVE, "bytes=1500000-"), "only the rest was fetched"
    assert site.progress[0] == (1_500_000, len(data))
    assert usable_counts(at) == {"Cat": "30 usable", "Dog": "30 usable"}


def damaged(data: bytes, entry: str) -> bytes:
    """`data` with the bytes of one entry overwritten: still a zip, but that file is broken."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(entry)
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    broken = bytearray(data)
    broken[start + 100:start + 300] = bytes(200)
    return bytes(broken)


@pytest.mark.parametrize("served, expected", [
    ("web page", "is not a zip archive (perhaps a web page from a proxy or log-in portal)"),
    ("damaged entry", "'PetImages/Dog/3.jpg' is damaged"),
])
def test_corrupt_archive_shows_an_error_and_no_dataset(workspace, site, served, expected):
    site.files[ARCHIVE] = (b"<html>Please log in to the hotel wifi</html>" if served == "web page"
                           else damaged(pet_images_zip(), "PetImages/Dog/3.jpg"))

    at = press_download(download_page())

    [message] = texts(at.error)
    assert expected in message
    assert not at.metric and not at.dataframe
    assert not (workspace / "datasets" / "dogs_vs_cats").exists(), "nothing half unpacked"


def test_web_page_served_instead_of_the_zip_is_fetched_again_on_the_next_press(workspace, site):
    site.files[ARCHIVE] = b"<html>Please log in to the hotel wifi</html>"
    at = press_download(download_page())
    assert at.error

    site.files[ARCHIVE] = pet_images_zip()
    press_download(at)

    assert not at.error
    assert usable_counts(at) == {"Cat": "30 usable", "Dog": "30 usable"}


def test_damaged_download_is_fetched_again_on_the_next_press(workspace, site):
    site.files[ARCHIVE] = damaged(pet_images_zip(), "PetImages/Dog/3.jpg")
    at = press_download(download_page())
    assert "is damaged" in at.error[0].value

    site.files[ARCHIVE] = pet_images_zip()
    press_download(at)

    assert not at.error, texts(at.error)
    assert usable_counts(at) == {"Cat": "30 usable", "Dog": "30 usable"}


def test_archive_with_entries_outside_its_folder_is_refused_and_writes_nothing(
        workspace, tmp_path, site):
    site.files[ARCHIVE] = pet_images_zip({"../../evil.jpg": b"pwned",
                                          "PetImages/../../../evil.jpg": b"pwned"})
    before = files_under(tmp_path)

    at = press_download(download_page())

    [message] = texts(at.error)
    assert "contains the entry '../../evil.jpg', which would be written outside the " \
           "destination folder; nothing was unpacked" in message
    assert not at.metric
    written = files_under(tmp_path) - before
    assert written == set(), "nothing unpacked, and the refused download deleted"
    assert not [p for p in tmp_path.rglob("evil*")]
