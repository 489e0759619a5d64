"""Uploads are bounded (issue 11, item 3) and bad path strings get one line (item 4): a zip
bomb of zeros against the datasets quota and the free disk space, a disk that fills up while
unpacking, an identical upload reused, uploads that end in an error leaving nothing behind,
upload names that try to leave datasets/, and a NUL byte or 5,000 characters in the Dataset
page's folder field. Through transfer_core.sources first, then the page as a user drives it.
"""

from __future__ import annotations

import collections
import errno
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

# The helpers, and the `frame` and `workspace` fixtures, of the other AppTest module.
from test_app import (assert_no_exception, files_under, frame, open_page, picture,  # noqa: F401
                      texts, upload_zip, usable_counts, workspace, zip_bytes)
from local_site import serving
from transfer_core import config, sources
from transfer_core.datasets import scan
from transfer_core.errors import ArchiveError, DatasetError, NoRoomError
from transfer_core.sources import UPLOAD_MARKER, unpack_upload, upload_folder_name

MiB = 2**20
DiskUsage = collections.namedtuple("DiskUsage", "total used free")  # as shutil.disk_usage
RED, BLUE = (200, 40, 30), (30, 60, 200)


def zeros_bomb(files=3, mib_each=4, top="bomb") -> bytes:
    """A zip of `files` entries of zeros, ZIP_DEFLATED: about 1,000 times smaller than it unpacks.
    The entries are named .jpg, as a bomb meant to pass for photos would be."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(files):
            archive.writestr(f"{top}/class{i}/0.jpg", bytes(mib_each * MiB))
    return buffer.getvalue()


def pets_zip(top="pets", classes=(("red", RED), ("blue", BLUE)), per_class=2) -> bytes:
    return zip_bytes({f"{top}/{name}/{i}.png": picture(rgb, seed=i)
                      for name, rgb in classes for i in range(per_class)})


def upload(data: bytes, name: str) -> io.BytesIO:
    """What Streamlit hands the page: a BytesIO with the browser's file name."""
    file = io.BytesIO(data)
    file.name = name
    return file


def scan_check(folder: Path) -> None:
    scan(folder, workers=1)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("TRANSFER_LAB_DATASETS_QUOTA", raising=False)
    return tmp_path / "ws"


def datasets(workspace: Path) -> list[str]:
    """Everything in the workspace's datasets/ folder, hidden staging folders included."""
    return sorted(p.name for p in config.datasets_dir(workspace).iterdir())


# ------------------------------------------------------------------------------ the quota


def test_zeros_bomb_over_the_quota_is_refused_before_anything_is_written(ws, monkeypatch):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "8M")
    bomb = zeros_bomb(files=3, mib_each=4)
    assert len(bomb) < 100_000, "the bomb is small; it unpacks to 12 MiB"
    opened = []
    monkeypatch.setattr(sources, "open", lambda *a, **k: opened.append(a) or open(*a, **k),
                        raising=False)

    with pytest.raises(NoRoomError) as raised:
        unpack_upload(upload(bomb, "holiday.zip"), ws)

    message = str(raised.value)
    root = ws / "datasets"
    assert message.startswith("holiday.zip unpacks to 12.0 MiB, but the datasets folder "
                              f"{root} already holds 0.0 MiB of its 8.0 MiB quota")
    assert f"Delete uploads you no longer need from {root}, or raise " \
           "TRANSFER_LAB_DATASETS_QUOTA." in message
    assert opened == [], "no file was opened for writing"
    assert datasets(ws) == []


def test_quota_counts_what_the_datasets_folder_already_holds(ws, monkeypatch):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "7M")
    first = unpack_upload(upload(zeros_bomb(files=2, mib_each=2), "first.zip"), ws)
    assert first == ws / "datasets" / "first" / "bomb"

    with pytest.raises(NoRoomError, match=r"second.zip unpacks to 4.0 MiB, but the datasets "
                                          r"folder .* already holds 4.0 MiB of its 7.0 MiB "
                                          r"quota \(3.0 MiB left\)"):
        unpack_upload(upload(zeros_bomb(files=2, mib_each=2, top="other"), "second.zip"), ws)
    assert datasets(ws) == ["first"]

    shutil.rmtree(ws / "datasets" / "first")  # what the message asks the user to do
    second = unpack_upload(upload(zeros_bomb(files=2, mib_each=2, top="other"), "second.zip"), ws)
    assert second == ws / "datasets" / "second" / "other"


def test_a_bad_quota_value_is_named_and_echoed(ws, monkeypatch):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "lots")
    with pytest.raises(DatasetError, match=r"`TRANSFER_LAB_DATASETS_QUOTA` must be a positive "
                                           r"size .* Received: TRANSFER_LAB_DATASETS_QUOTA='lots'"):
        unpack_upload(upload(pets_zip(), "pets.zip"), ws)
    assert datasets(ws) == []


@pytest.mark.parametrize("value, expected", [("20G", 20 * 2**30), ("1.5G", 3 * 2**29),
                                             ("500M", 500 * MiB), ("64 KiB", 65536),
                                             ("12345", 12345)])
def test_quota_takes_bytes_or_a_unit(monkeypatch, value, expected):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", value)
    assert config.datasets_quota() == expected


def test_sizes_that_lie_stop_the_unpacking_at_the_quota_left(ws, monkeypatch):
    """The headers declare 1 MiB per entry; the entries hold 6 MiB (a reader that trusts the
    data over the header): the writing stops once the quota is used up, and nothing is kept."""
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "5M")
    bomb = zeros_bomb(files=2, mib_each=1)

    def lying_open(archive, info, *args, **kwargs):
        return io.BytesIO(bytes(6 * MiB))
    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)

    with pytest.raises(NoRoomError) as raised:
        unpack_upload(upload(bomb, "liar.zip"), ws)
    assert str(raised.value) == ("liar.zip unpacks to more than its header says, more than the "
                                 "5.0 MiB left in the datasets quota; nothing was unpacked.")
    assert datasets(ws) == []


# ------------------------------------------------------------------------------ the disk


def test_free_space_is_checked_before_unpacking(ws, monkeypatch):
    free = config.FREE_SPACE_MARGIN + 2 * MiB

    def nearly_full(path):
        return DiskUsage(100 * 2**30, 100 * 2**30 - free, free)
    monkeypatch.setattr(shutil, "disk_usage", nearly_full)

    with pytest.raises(NoRoomError) as raised:
        unpack_upload(upload(zeros_bomb(files=3, mib_each=1), "photos.zip"), ws)

    root = ws / "datasets"
    assert str(raised.value) == (
        f"photos.zip unpacks to 3.0 MiB, but the disk holding {root} has 514.0 MiB free and "
        "512.0 MiB must stay free for training; nothing was unpacked. Delete uploads you no "
        f"longer need from {root} or other files on that disk, or use a workspace on a larger "
        "disk (TRANSFER_LAB_WORKSPACE).")
    assert datasets(ws) == []
    assert unpack_upload(upload(zeros_bomb(files=2, mib_each=1), "fits.zip"), ws).is_dir()


def test_disk_filling_up_while_unpacking_leaves_nothing(ws, monkeypatch):
    class FillsUp(io.FileIO):
        written = 0

        def write(self, data):
            FillsUp.written += len(data)
            if FillsUp.written > 3 * MiB:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)
    monkeypatch.setattr(sources, "open", lambda path, mode: FillsUp(path, mode), raising=False)

    with pytest.raises(NoRoomError) as raised:
        unpack_upload(upload(zeros_bomb(files=3, mib_each=2), "big.zip"), ws)

    assert str(raised.value).startswith("The disk filled up while unpacking big.zip "
                                        "('bomb/class1/0.jpg'); nothing was kept. Delete uploads")
    assert FillsUp.written > 3 * MiB, "the fault was met while writing"
    assert datasets(ws) == [], "no unpacked or staging folder"


def test_dogs_vs_cats_over_the_quota_keeps_the_download_for_the_next_try(tmp_path, monkeypatch):
    """The download is sound: deleting it would cost another 800 MB on the next try."""
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "3M")
    archive = zip_bytes({"PetImages/Cat/0.jpg": bytes(4 * MiB), "PetImages/Dog/0.jpg": b"d"})
    with serving() as site:
        site.files["/pets.zip"] = archive
        with pytest.raises(NoRoomError, match="of its 3.0 MiB quota"):
            sources.prepare_dogs_vs_cats(tmp_path / "ws", url=f"{site.url}/pets.zip")
        assert datasets(tmp_path / "ws") == ["pets.zip"]

        monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "5M")
        folder = sources.prepare_dogs_vs_cats(tmp_path / "ws", url=f"{site.url}/pets.zip")
        assert (folder / "Dog" / "0.jpg").read_bytes() == b"d"
        assert len(site.requests) == 1, "the kept download was used"


# ------------------------------------------------------------------------------ reuse


def test_identical_upload_reuses_its_folder(ws):
    data = pets_zip()
    first = unpack_upload(upload(data, "pets.zip"), ws, check=scan_check)
    marker = json.loads((ws / "datasets" / "pets" / UPLOAD_MARKER).read_text())
    (first / "red" / "0.png").touch()  # a later call must not unpack over it
    stamp = (first / "red" / "0.png").stat().st_mtime_ns

    again = unpack_upload(upload(data, "pets (1).zip"), ws, check=scan_check)

    assert again == first == ws / "datasets" / "pets" / "pets"
    assert (first / "red" / "0.png").stat().st_mtime_ns == stamp
    assert datasets(ws) == ["pets"], "no second copy"
    assert marker["upload"] == "pets.zip" and len(marker["sha256"]) == 64

    other = unpack_upload(upload(pets_zip(per_class=3), "pets.zip"), ws, check=scan_check)
    assert other == ws / "datasets" / "pets-2" / "pets", "other bytes, same name: a new folder"


def test_folder_without_the_marker_is_never_reused(ws):
    """The marker is written last: a folder without it may be half unpacked or edited."""
    data = pets_zip()
    first = unpack_upload(upload(data, "pets.zip"), ws)
    (first.parent / UPLOAD_MARKER).unlink()

    again = unpack_upload(upload(data, "pets.zip"), ws)

    assert again == ws / "datasets" / "pets-2" / "pets"
    assert (again.parent / UPLOAD_MARKER).is_file()


# ------------------------------------------------------------------------- errors leave nothing


ERROR_UPLOADS = {
    "one class": (zip_bytes({f"cats/cat.{i}.png": picture(RED, seed=i) for i in range(3)}),
                  DatasetError,
                  "usable images for 1 class(es)"),
    "no images": (zip_bytes({"notes/readme.txt": b"hello", "notes/list.csv": b"a,b"}),
                  DatasetError, "usable images for 0 class(es)"),
    "zip in zip": (zip_bytes({"outer/inner.zip": pets_zip(), "outer/readme.txt": b"hi"}),
                   ArchiveError, ("x.zip holds another zip, outer/inner.zip, and no images: unpack "
                                  "it and upload that, or zip the image folders themselves.")),
    "corrupt": (pets_zip()[:-200], ArchiveError, "x.zip is not a valid zip archive"),
    "quota": (zeros_bomb(files=2, mib_each=12), NoRoomError, "of its 20.0 MiB quota"),
}


@pytest.mark.parametrize("case", ERROR_UPLOADS)
def test_upload_that_ends_in_an_error_leaves_nothing_behind(ws, monkeypatch, case):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "20M")
    data, error, expected = ERROR_UPLOADS[case]

    with pytest.raises(error) as raised:
        unpack_upload(upload(data, "x.zip"), ws, check=scan_check)

    assert expected in str(raised.value)
    assert datasets(ws) == [], "no unpacked or staging folder"


def test_scan_failure_says_nothing_was_kept(ws):
    with pytest.raises(DatasetError) as raised:
        unpack_upload(upload(ERROR_UPLOADS["one class"][0], "reds.zip"), ws, check=scan_check)
    assert str(raised.value).endswith("Nothing of reds.zip was kept: fix the archive and upload "
                                      "it again.")


def test_zips_beside_images_are_unpacked_as_they_are(ws):
    """Only a zip of zips is refused: a stray backup.zip beside the photos does no harm."""
    data = zip_bytes({"pets/red/0.png": picture(RED), "pets/blue/0.png": picture(BLUE),
                      "pets/backup.zip": pets_zip()})
    folder = unpack_upload(upload(data, "pets.zip"), ws, check=scan_check)
    assert (folder / "backup.zip").is_file() and (folder / "red" / "0.png").is_file()


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["..zip", "../x.zip", ".zip", "...zip", "a/../../b.zip",
                                  "..\\..\\x.zip", "/etc/cron.d/x.zip", "x\0y.zip", "\0.zip",
                                  "x" * 5000 + ".zip", ".hidden.zip", "~.zip", "-.zip"])
def test_upload_names_cannot_leave_the_datasets_folder(ws, tmp_path, name):
    folder = unpack_upload(upload(pets_zip(top="pets"), name), ws)

    [made] = datasets(ws)
    assert folder == ws / "datasets" / made / "pets"
    assert not made.startswith(".") and len(made) <= 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"], "nothing beside the workspace"
    assert sorted(p.name for p in ws.iterdir()) == ["datasets"]


@pytest.mark.parametrize("name, folder", [("cats_dogs.zip", "cats_dogs"), ("Pets.ZIP", "Pets"),
                                          ("chats été.zip", "chats été"), ("a.b.zip", "a_b"),
                                          ("..zip", "upload"), ("../../x.zip", "x"),
                                          ("C:\\Users\\me\\pets.zip", "pets")])
def test_upload_folder_names_are_plain(name, folder):
    assert upload_folder_name(name) == folder


# ------------------------------------------------------------------------------ the Dataset page


def test_page_zip_bomb_over_the_quota_shows_the_numbers_and_keeps_nothing(workspace, monkeypatch):
    monkeypatch.setenv("TRANSFER_LAB_DATASETS_QUOTA", "8M")
    at = upload_zip(open_page("dataset"), "bomb.zip", zeros_bomb(files=3, mib_each=4))

    [message] = texts(at.error)
    assert "bomb.zip unpacks to 12.0 MiB" in message and "of its 8.0 MiB quota" in message
    assert f"Delete uploads you no longer need from {workspace / 'datasets'}" in message
    assert not at.metric
    assert datasets(workspace) == []


@pytest.mark.parametrize("case", ["one class", "zip in zip"])
def test_page_upload_that_cannot_be_used_keeps_nothing(workspace, case):
    data, _, expected = ERROR_UPLOADS[case]
    at = upload_zip(open_page("dataset"), "x.zip", data)

    [message] = texts(at.error)
    assert expected in message
    assert not at.metric
    assert datasets(workspace) == []


def test_page_same_zip_twice_is_unpacked_once(workspace):
    data = pets_zip(per_class=3)
    at = upload_zip(open_page("dataset"), "pets.zip", data)
    assert usable_counts(at) == {"blue": "3 usable", "red": "3 usable"}

    at = upload_zip(open_page("dataset"), "pets-again.zip", data)  # another session

    assert usable_counts(at) == {"blue": "3 usable", "red": "3 usable"}
    assert datasets(workspace) == ["pets"]
    assert str(workspace / "datasets" / "pets" / "pets") in " ".join(texts(at.caption))


def test_page_upload_named_dot_dot_zip_stays_in_datasets(workspace):
    at = upload_zip(open_page("dataset"), "..zip", pets_zip())

    assert usable_counts(at) == {"blue": "2 usable", "red": "2 usable"}
    assert datasets(workspace) == ["upload"]
    assert not any(p.name.startswith("datasets-") for p in workspace.iterdir())


@pytest.mark.parametrize("path, expected", [
    ("{ws}/x\0y", "The path contains a NUL byte"),
    ("{ws}/" + "a" * 5000, "The path is 5,"),
    ("{ws}/" + "b" * 300, "The path has a name of 300 bytes"),
])
def test_page_folder_field_with_a_bad_path_shows_one_line(workspace, path, expected):
    at = open_page("dataset")
    at.radio(key="source").set_value("Folder on this server").run()
    at.text_input[0].set_value(path.format(ws=workspace)).run()
    [use] = [b for b in at.button if b.label == "Use this folder"]
    use.click().run()

    assert_no_exception(at)
    [message] = texts(at.error)
    assert message.startswith(expected) and "\n" not in message
    assert not at.metric


def test_is_allowed_says_no_to_paths_no_file_system_takes(tmp_path):
    """The scan asks it for every file it meets: it answers, it does not raise."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for path in [tmp_path / "x\0y", tmp_path / "loop" / "photo.jpg", "~nobody-here/photo.jpg"]:
        assert config.is_allowed(path, [tmp_path, Path.home()]) is False, path
    assert config.is_allowed(tmp_path / "photo.jpg", [tmp_path]) is True
