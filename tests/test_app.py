"""The Streamlit app driven as a user would, through `streamlit.testing.v1.AppTest`: every page on
a fresh workspace, the dataset sources, and one tiny run (VGG16 at 32 px, no weights) that the
Train, Curves, Evaluate and Predict pages share. The download source is in test_app_download.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from transfer_core.datasets import load_manifest
from transfer_core.sources import make_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # the first script run imports TensorFlow
PAGES = {"dataset": "app_pages/dataset.py", "train": "app_pages/train.py",
         "curves": "app_pages/curves.py",
         "evaluate": "app_pages/evaluate.py", "predict": "app_pages/predict.py",
         "compare": "app_pages/compare.py"}
DEMO_CLASSES = ["forests", "oceans", "sunsets"]


# ------------------------------------------------------------------------------ helpers


def clear_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


def use_workspace(monkeypatch, path: Path, clear: bool = True) -> Path:
    monkeypatch.setenv("TRANSFER_LAB_WORKSPACE", str(path))
    monkeypatch.delenv("TRANSFER_LAB_DATA", raising=False)
    monkeypatch.delenv("TRANSFER_LAB_ROOTS", raising=False)
    if clear:
        clear_caches()
    return path


def open_page(page: str, **state) -> AppTest:
    """A new browser session on `page` (the app must run once before it can switch pages).

    `state` seeds widget values by key, as a session that chose them earlier would have them;
    the Train page uses it to start at 32 px instead of measuring VGG16 at 150 px first.
    """
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page != "dataset":
        at.switch_page(PAGES[page]).run()
    assert_no_exception(at)
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def link_target(at: AppTest, link) -> str:
    """The page file a page link opens (AppTest keeps the pages st.navigation registered)."""
    page = at._registered_pages[link.proto.page_script_hash]
    return str(Path(page["script_path"]).relative_to(ROOT))


def usable_counts(at: AppTest) -> dict[str, str]:
    """The Dataset page's per-class metrics: {class: "60 usable"}."""
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by widget key, as the JSON the browser receives."""
    found = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        found[chart.key or chart.proto.id] = spec
    return found


def trace_names(figure: dict) -> list[str]:
    return [trace.get("name", "") for trace in figure["data"]]


def picture(rgb, size=48, seed=0, fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def folder_of_pictures(root: Path, per_class=6) -> Path:
    for c, (name, rgb) in enumerate({"red": (200, 40, 30), "blue": (30, 60, 200)}.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{name}_{i}.png").write_bytes(picture(rgb, seed=100 * c + i))
    return root


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def scan_for_components_once(monkeypatch) -> None:
    """Each AppTest looks for installed custom components (about a second); none are added
    while the tests run, so the first answer stands for all."""
    import functools

    from streamlit.components.v2 import manifest_scanner

    monkeypatch.setattr(manifest_scanner, "scan_component_manifests",
                        functools.cache(manifest_scanner.scan_component_manifests))


@pytest.fixture(autouse=True)
def frame(monkeypatch):
    scan_for_components_once(monkeypatch)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    return use_workspace(monkeypatch, tmp_path / "workspace")


@pytest.fixture
def media(monkeypatch):
    """Every file the app hands to the browser (downloads, images), by the URL it gets."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.media_file_storage import MediaFileStorageError
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, endpoint):
            super().__init__(endpoint)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recording)

    def content(url: str) -> bytes:
        name = url.rsplit("/", 1)[-1]
        for store in reversed(stores):
            try:
                return store.get_file(name).content
            except MediaFileStorageError:
                continue
        raise KeyError(url)

    return content


# ------------------------------------------------------------------------------ a fresh workspace


@pytest.mark.parametrize("page, missing, link_label, link_page", [
    ("train", "There is no dataset yet", "Go to Dataset", "dataset"),
    ("curves", "No run has finished an epoch yet", "Go to Train", "train"),
    ("evaluate", "No finished run with a saved model yet", "Go to Train", "train"),
    ("predict", "No trained model yet", "Go to Train", "train"),
])
def test_page_on_a_fresh_workspace_says_what_is_missing_and_links_to_it(
        workspace, page, missing, link_label, link_page):
    at = open_page(page)

    assert at.title[0].value == page.capitalize()
    assert any(missing in text for text in texts(at.main.info)), texts(at.main.info)
    assert [(link.value, link_target(at, link)) for link in at.main.page_link] == [
        (link_label, PAGES[link_page])]
    assert not at.main.button, "nothing to start or evaluate without a dataset or a run"
    assert texts(at.sidebar.markdown).count("none yet") == 2  # no dataset, no run


def test_dataset_page_on_a_fresh_workspace_offers_the_sources(workspace):
    at = open_page("dataset")

    assert at.radio(key="source").options == ["Demo set", "Folder on this server",
                                              "Upload a zip", "Make your own",
                                              "Download Dogs vs Cats"]
    assert at.radio(key="source").value == "Demo set"
    assert "Choose a source above to begin." in texts(at.info)
    assert [b.label for b in at.button] == ["Create the demo set"]
    assert str(workspace) in " ".join(texts(at.sidebar.caption))


# ------------------------------------------------------------------------------ Dataset page


def test_demo_set_is_scanned_split_and_saved_as_the_current_dataset(workspace):
    at = open_page("dataset")
    button(at, "Create the demo set").click().run()
    assert_no_exception(at)

    assert usable_counts(at) == {name: "60 usable" for name in DEMO_CLASSES}
    table = at.dataframe[0].value
    assert list(table["class"]) == DEMO_CLASSES + ["total"]
    totals = table.set_index("class").loc["total"]
    assert (totals["train"], totals["validation"], totals["test"]) == (126, 27, 27)
    assert "balance_chart" in charts(at)
    assert not list((workspace / "manifests").glob("*.json")), "nothing is saved before Save"

    button(at, "Save this split").click().run()
    assert_no_exception(at)

    saved = list((workspace / "manifests").glob("*.json"))
    assert len(saved) == 1
    assert texts(at.success) == [f"Saved as {saved[0].name}. It is now the current dataset."]
    assert [link.value for link in at.main.page_link] == ["Next: train a model"]
    manifest = json.loads(saved[0].read_text())
    assert sorted(manifest["classes"]) == DEMO_CLASSES
    assert saved[0].stem in texts(at.sidebar.markdown)[0]
    assert "train 126 · validation 27 · test 27 · 3 classes" in texts(at.sidebar.caption)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """An allowed root with a dataset in it, and a dataset outside every allowed root."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    folder_of_pictures(allowed / "pets")
    folder_of_pictures(outside / "pets")
    monkeypatch.setenv("TRANSFER_LAB_ROOTS", str(allowed))
    return allowed, outside


def choose_server_folder(at: AppTest, path: str) -> AppTest:
    at.radio(key="source").set_value("Folder on this server").run()
    at.text_input[0].set_value(path).run()
    button(at, "Use this folder").click().run()
    assert_no_exception(at)
    return at


def test_folder_inside_the_allowed_roots_is_scanned_and_split_by_counts(workspace, folders):
    allowed, _ = folders
    at = choose_server_folder(open_page("dataset"), str(allowed / "pets"))
    assert not at.error
    assert usable_counts(at) == {"blue": "6 usable", "red": "6 usable"}

    at.radio(key="split_choice").set_value("counts").run()
    at.number_input(key="count_train").set_value(10).run()
    assert_no_exception(at)

    [message] = texts(at.error)
    assert message.startswith("Class 'blue' has 6 usable images, but counts 10/1/1 per class")
    assert "Choose smaller counts or fractions, or add images." in message
    assert "Save this split" not in [b.label for b in at.button]
    at.number_input(key="count_train").set_value(4).run()
    assert not at.error and "Save this split" in [b.label for b in at.button]


def test_folder_outside_the_allowed_roots_is_refused(workspace, folders):
    allowed, outside = folders
    (allowed / "link").symlink_to(outside / "pets")
    at = choose_server_folder(open_page("dataset"), str(allowed / "pets"))
    assert usable_counts(at), "an allowed folder is scanned"

    for path in [outside / "pets", allowed / ".." / "outside" / "pets", allowed / "link",
                 Path("/")]:
        choose_server_folder(at, str(path))
        assert len(at.error) == 1, path
        message = at.error[0].value
        assert message.startswith(f"{path} is outside the folders this app may read"), message
        assert str(allowed) in message and "Set TRANSFER_LAB_ROOTS to allow it." in message
        assert not at.metric and not at.dataframe, "neither it nor the earlier folder is shown"


def test_class_folder_linked_outside_the_roots_is_skipped_not_read(workspace, folders):
    allowed, outside = folders
    (outside / "pets" / "blue").rename(outside / "wolves")
    (allowed / "pets" / "wolves").symlink_to(outside / "wolves")
    at = choose_server_folder(open_page("dataset"), str(allowed / "pets"))

    assert usable_counts(at) == {"blue": "6 usable", "red": "6 usable", "wolves": "0 usable"}
    skipped = " ".join(str(df.value.to_dict()) for df in at.dataframe)
    assert "wolves links outside the allowed folders" in skipped


def test_missing_folder_inside_the_roots_says_so(workspace, folders):
    allowed, _ = folders
    at = choose_server_folder(open_page("dataset"), str(allowed / "nothing-here"))

    assert [e.value for e in at.error] == [f"There is no folder {allowed / 'nothing-here'} "
                                           "on the server."]
    assert not at.metric


def test_data_folder_from_the_environment_is_offered_first_and_allowed(workspace, tmp_path,
                                                                        monkeypatch):
    data = folder_of_pictures(tmp_path / "data")
    folder_of_pictures(tmp_path / "elsewhere")
    monkeypatch.setenv("TRANSFER_LAB_DATA", str(data))

    at = open_page("dataset")
    assert at.radio(key="source").value == "Folder on this server"
    assert at.text_input[0].value == str(data)
    button(at, "Use this folder").click().run()
    assert usable_counts(at) == {"blue": "6 usable", "red": "6 usable"}

    choose_server_folder(at, str(tmp_path / "elsewhere"))
    assert "outside the folders this app may read" in at.error[0].value


def upload_zip(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="source").set_value("Upload a zip").run()
    at.file_uploader[0].set_value((name, data, "application/zip")).run()
    assert_no_exception(at)
    return at


def test_uploaded_zip_is_unpacked_into_the_workspace_and_scanned(workspace, tmp_path):
    pets = folder_of_pictures(tmp_path / "pets")
    entries = {f"pets/{path}": (pets / path).read_bytes() for path in files_under(pets)}
    entries["__MACOSX/pets/red/._red_0.png"] = b"finder junk"
    entries["pets/red/notes.jpg"] = b"not a photo"

    at = upload_zip(open_page("dataset"), "pets.zip", zip_bytes(entries))

    assert not at.error
    assert usable_counts(at) == {"blue": "6 usable", "red": "6 usable"}
    assert {m.label: m.delta for m in at.metric} == {"blue": "", "red": "1 skipped"}
    assert at.expander[0].label == "1 skipped files and why"
    unpacked = workspace / "datasets" / "pets" / "pets"
    assert (unpacked / "red" / "red_0.png").is_file()
    assert not (workspace / "datasets" / "__MACOSX").exists()
    assert str(unpacked) in " ".join(texts(at.caption))

    button(at, "Save this split").click().run()
    assert len(list((workspace / "manifests").glob("*.json"))) == 1


def test_uploaded_zip_that_would_write_outside_is_refused_and_writes_nothing(
        workspace, tmp_path):
    good = zip_bytes({"pets/red/1.png": picture((200, 40, 30)),
                      "pets/blue/1.png": picture((30, 60, 200))})
    at = upload_zip(open_page("dataset"), "pets.zip", good)
    assert usable_counts(at) == {"blue": "1 usable", "red": "1 usable"}
    before = files_under(tmp_path)

    for entry in ["../evil.png", "pets/../../evil.png", "../../../evil.png",
                  str(tmp_path / "outside" / "evil.png")]:
        data = zip_bytes({"pets/red/1.png": picture((200, 40, 30)),
                          "pets/blue/1.png": picture((30, 60, 200)), entry: b"pwned"})
        upload_zip(at, "pets.zip", data)
        assert len(at.error) == 1, entry
        assert f"contains the entry {entry!r}, which would be written outside the destination " \
               "folder; nothing was unpacked" in at.error[0].value
        assert files_under(tmp_path) == before, "no file was written anywhere"
        assert not at.metric, "neither it nor the earlier upload is shown"


def test_uploaded_file_that_is_not_a_zip_gets_an_error(workspace):
    at = upload_zip(open_page("dataset"), "photos.zip", b"<html>not a zip</html>")

    assert len(at.error) == 1 and "is not a valid zip archive" in at.error[0].value
    assert not at.metric


# ------------------------------------------------------------------------------ one tiny run


def _stop_if_running(run) -> None:
    from transfer_core.storage import process_alive as _alive

    pid = run.status().get("pid")
    if _alive(pid):
        run.request_stop()
        for _ in range(50):
            if not _alive(pid):
                return
            time.sleep(0.2)
        os.kill(int(pid), 9)


@pytest.fixture(scope="module", autouse=True)
def training(tmp_path_factory):
    """A workspace with the demo split, and a tiny run started from the Train page at the start
    of the module, so that it trains while the tests that need no run go on; `trained` waits.

    The split is made with transfer_core directly (the Dataset page has its own tests)."""
    from transfer_core.datasets import SplitRequest, scan, split

    workspace = tmp_path_factory.mktemp("trained") / "workspace"
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_workspace(monkeypatch, workspace)
        scan_for_components_once(monkeypatch)
        demo = make_demo_dataset(workspace / "datasets" / "demo")
        split(scan(demo, workers=1), SplitRequest(fractions=(0.7, 0.15, 0.15))).save(workspace)

        at = open_page("train", size_vgg16=32)
        seen = {"errors": texts(at.error)}
        assert at.number_input(key="size_vgg16").value == 32
        at.selectbox(key="backbone").set_value("vgg16").run()
        at.radio(key="weights").set_value("none").run()
        # Not the chapter's split, so the page starts on settings measured on it; say why
        assert at.radio(key="settings").value == "recommended"
        seen["settings"] = [c for c in texts(at.caption) if c.startswith("In use")]
        at.radio(key="settings").set_value("chapter").run()
        at.number_input(key="epochs").set_value(3).run()
        at.number_input(key="learning_rate").set_value(1e-3).run()
        assert_no_exception(at)
        seen["estimate"] = [c for c in texts(at.caption) if c.startswith("Estimated time")]

        button(at, "Start training").click().run()
        assert_no_exception(at)
        seen["after_start"] = {"subheaders": texts(at.subheader),
                               "buttons": [b.label for b in at.button]}
    run_folders = [p for p in (workspace / "runs").iterdir() if (p / "config.json").exists()]
    assert len(run_folders) == 1, run_folders
    from transfer_core.runs import Run

    run = Run(run_folders[0])
    try:
        yield {"workspace": workspace, "run": run, "at": at, "seen": seen}
    finally:
        _stop_if_running(run)
        clear_caches()


@pytest.fixture(scope="module")
def trained(training):
    """The run of `training`, finished, with the Train page polled until it said so."""
    at, run = training["at"], training["run"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_workspace(monkeypatch, training["workspace"], clear=False)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            at.run()  # as the page's fragment does every two seconds
            assert_no_exception(at)
            if at.success or at.error:
                break
            time.sleep(1)
    training["seen"]["log"] = run.log_path.read_text() if run.log_path.exists() else ""
    return training


@pytest.fixture
def on_trained(trained, monkeypatch):
    use_workspace(monkeypatch, trained["workspace"], clear=False)
    return trained


def test_train_page_starts_a_run_that_finishes_and_shows_its_curves(on_trained):
    at, seen, run = on_trained["at"], on_trained["seen"], on_trained["run"]

    assert seen["errors"] == []
    assert seen["estimate"] and "feature extraction" in seen["estimate"][0]
    assert "not the chapter's split" in seen["settings"][0], seen["settings"]
    assert seen["after_start"]["subheaders"] == [f"Run {run.name}"]
    assert "Stop" in seen["after_start"]["buttons"], "a queued or running run can be stopped"

    assert texts(at.success) == ["Finished. The last epoch's model is saved."], seen["log"][-2000:]
    assert not at.error
    config = json.loads((run.folder / "config.json").read_text())
    assert (config["backbone"], config["image_size"], config["weights"], config["epochs"]) == \
        ("vgg16", 32, "none", 3)
    assert run.model_path.is_file()
    figures = charts(at)
    assert {"live_acc", "live_loss"} <= figures.keys()
    assert any(name.endswith("validation · raw") for name in trace_names(figures["live_acc"]))
    # The star marks the epoch the run keeps: the last of 3, by the chapter's rule
    [star] = [t for t in figures["live_loss"]["data"] if t["name"] == "kept epoch"]
    assert star["x"] == [3]
    assert [(link.value, link_target(at, link)) for link in at.main.page_link] == [
        ("See the curves", PAGES["curves"]), ("Evaluate on the test set", PAGES["evaluate"]),
        ("Predict on your photos", PAGES["predict"])]
    assert run.name in texts(at.sidebar.markdown)[-1]
    assert any("finished" in c for c in texts(at.sidebar.caption))


def test_train_page_states_the_view_banks_disk_use_before_it_is_built(on_trained):
    at = open_page("train", size_vgg16=32)
    at.selectbox(key="backbone").set_value("vgg16").run()
    at.radio(key="strategy").set_value("fine_tune").run()
    assert_no_exception(at)
    assert at.radio(key="view_bank_mode").value == "auto"  # TrainConfig's default
    at.number_input(key="epochs").set_value(10).run()
    at.number_input(key="ft_epochs").set_value(20).run()
    # By default fine-tuning runs on the fly: only the classifier's 10 epochs read the bank,
    # one view per three epochs, stored at the base's output
    assert at.checkbox(key="fine_tune_on_bank").value is False
    assert any(c.startswith("Automatic: 4 views (10 epochs read the bank")
               for c in texts(at.caption)), texts(at.caption)
    manifest = load_manifest(on_trained["run"].config.manifest)
    n_train, n_val = (len(manifest.files(split)[0]) for split in ("train", "validation"))
    [caption] = [c for c in texts(at.caption) if c.startswith("The frozen part runs 4×")]
    assert f"4 × {n_train} training views and {n_val} validation photos at the base's output." \
        in caption
    # Fine-tuning on the stored views too: 10 + 20 epochs read the bank
    at.checkbox(key="fine_tune_on_bank").check().run()
    assert any(c.startswith("Automatic: 10 views (30 epochs read the bank")
               for c in texts(at.caption)), texts(at.caption)
    assert any(c.startswith("The frozen part runs 10×") for c in texts(at.caption))
    at.radio(key="view_bank_mode").set_value("number").run()
    assert at.number_input(key="view_bank").value == 3
    # VGG16 at 32 px: 2x2x512 at block4_pool, 1x1x512 at the base's output; the views in
    # float16, the validation photos in float32
    prefix, output = 2 * 2 * 512, 1 * 1 * 512
    total = 3 * n_train * 2 * (prefix + output) + n_val * 4 * (prefix + output)
    head = 3 * n_train * 2 * output + n_val * 4 * output
    [caption] = [c for c in texts(at.caption) if c.startswith("The frozen part runs 3×")]
    assert f"The bank takes {total / 2**20:.1f} MiB of disk" in caption
    assert f"3 × {n_train} training views and {n_val} validation photos at `block4_pool`" in caption
    assert f"{head / 2**20:.1f} MiB for the same at the base's output" in caption
    files_before = sorted((on_trained["workspace"] / "cache").rglob("*.npy"))
    at.number_input(key="view_bank").set_value(0).run()
    assert not [c for c in texts(at.caption) if c.startswith("The frozen part runs")]
    assert sorted((on_trained["workspace"] / "cache").rglob("*.npy")) == files_before


def test_train_page_keeps_the_last_epoch_only_without_early_stopping(on_trained):
    at = open_page("train", size_vgg16=32)
    at.selectbox(key="backbone").set_value("vgg16").run()
    assert "the last epoch (the chapter's way)" in at.selectbox(key="monitor").options
    at.selectbox(key="monitor").set_value("val_loss").run()
    at.number_input(key="patience").set_value(3).run()
    assert_no_exception(at)
    assert not at.error
    at.selectbox(key="monitor").set_value("last").run()
    assert at.number_input(key="patience").disabled  # nothing to wait for
    assert_no_exception(at)
    assert not at.error


def demo_split(workspace: Path) -> Path:
    """The demo photos split and saved as the workspace's dataset; the manifest's path."""
    from transfer_core.datasets import SplitRequest, scan, split

    demo = make_demo_dataset(workspace / "datasets" / "demo")
    return split(scan(demo, workers=1), SplitRequest(fractions=(0.7, 0.15, 0.15))).save(workspace)


def test_train_page_counts_images_as_images_whatever_the_stage_is_called(workspace):
    """The unit of a running run's progress comes from its status: an image count during a
    stage not named "extract…" reads "1200 of 12000 images", not "1200.0 of 12000"."""
    from transfer_core.runs import Run, TrainConfig

    config = TrainConfig(manifest=str(demo_split(workspace)), weights="none", image_size=32)
    run = Run.create(workspace, config)
    stage = "running the frozen top of the base over the cached train features"
    run.update_status(state="running", pid=os.getpid(), stage=stage,
                      progress={"done": 1200, "total": 12000, "unit": "images"})
    at = open_page("train", size_vgg16=32)
    [bar] = at.get("progress")
    assert bar.proto.text == f"{stage} · 1200 of 12000 images"
    run.update_status(stage="training the classifier on cached features",
                      progress={"done": 1.5, "total": 3, "unit": "epochs"})
    at.run()
    [bar] = at.get("progress")
    assert bar.proto.text == "training the classifier on cached features · 1.5 of 3"


def test_train_page_shows_the_feature_caches_size_and_clears_it(workspace):
    from transfer_core.features import FeatureCache

    demo_split(workspace)
    feature_set = FeatureCache(workspace).root / "0123abcd"
    feature_set.mkdir()
    (feature_set / "features.npy").write_bytes(b"\0" * 3 * 2**20)
    at = open_page("train", size_vgg16=32)
    [caption] = [c for c in texts(at.caption) if "cached by earlier runs" in c]
    assert "take 3.0 MiB of disk" in caption

    at.button(key="clear_cache").click().run()
    assert_no_exception(at)
    assert "Freed 3.0 MiB." in texts(at.success)
    assert not feature_set.exists()
    [caption] = [c for c in texts(at.caption) if "cached by earlier runs" in c]
    assert "take 0.0 MiB of disk" in caption and at.button(key="clear_cache").disabled


def test_a_new_session_finds_the_run_on_the_train_page(on_trained):
    at = open_page("train", size_vgg16=32)

    assert texts(at.subheader) == [f"Run {on_trained['run'].name}"]
    assert texts(at.success) == ["Finished. The last epoch's model is saved."]


def test_curves_page_shows_accuracy_and_loss_raw_and_smoothed_and_a_csv(on_trained, media):
    run = on_trained["run"]
    at = open_page("curves")

    assert at.multiselect(key="curve_runs").value == [run.name]
    figures = charts(at)
    assert set(figures) == {"accuracy_chart", "loss_chart"}
    for metric in ("accuracy", "loss"):
        names = trace_names(figures[f"{metric}_chart"])
        assert figures[f"{metric}_chart"]["layout"]["title"]["text"] == \
            f"Training and validation {metric}"
        for split in ("training", "validation"):
            assert f"{split} · raw" in names
            assert f"{split} · smoothed" in names
        raw = next(t for t in figures[f"{metric}_chart"]["data"]
                   if t["name"] == "training · raw")
        assert len(raw["y"]) == 3, "one point per epoch"
    # The chapter's rule, the default: the last of the 3 epochs is the model kept
    assert any(c.startswith(f"{run.name}: epoch 3 ") and "keeps the last epoch's model" in c
               for c in texts(at.caption)), texts(at.caption)

    download = at.download_button[0]
    assert download.label == "Download the numbers (CSV)"
    csv = media(download.proto.url).decode()
    header, *rows = csv.strip().splitlines()
    assert header.startswith("run,phase,phase_name,epoch,global_epoch,loss,loss_smoothed")
    assert len(rows) == 3 and all(row.startswith(run.name + ",") for row in rows)

    at.toggle(key="show_smoothed").set_value(False).run()
    assert_no_exception(at)
    names = trace_names(charts(at)["accuracy_chart"])
    assert not [n for n in names if "smoothed" in n] and [n for n in names if "raw" in n]

    at.toggle(key="show_raw").set_value(False).run()
    assert_no_exception(at)
    figure = charts(at)["loss_chart"]
    assert not [n for n in trace_names(figure) if "raw" in n or "smoothed" in n]
    assert "Turn on raw points or smoothed lines to see the curves." in texts(at.info)


def test_evaluate_page_computes_test_accuracy_and_the_confusion_matrix(on_trained):
    run = on_trained["run"]
    (run.folder / "evaluation.json").unlink(missing_ok=True)
    at = open_page("evaluate")

    assert at.selectbox(key="evaluate_run").value == run.name
    assert "This run has not been evaluated on the test split yet." in texts(at.markdown)
    assert not at.metric
    button(at, "Evaluate on the test split").click().run()
    assert_no_exception(at)

    metrics = {m.label: m.value for m in at.metric}
    assert re.fullmatch(r"\d{1,3}\.\d%", metrics["Test accuracy"]), metrics
    assert metrics["Test images"] == "27"
    matrix = charts(at)["confusion_matrix"]["data"][0]
    assert matrix["x"] == DEMO_CLASSES and matrix["y"] == DEMO_CLASSES
    z = np.array(matrix["z"])
    assert z.sum() == 27 and list(z.sum(axis=1)) == [9, 9, 9]
    accuracy = float(metrics["Test accuracy"].rstrip("%")) / 100
    assert abs(np.trace(z) / 27 - accuracy) < 0.001
    [interval] = [c for c in texts(at.caption) if c.startswith("Test accuracy ")]
    assert "Wilson interval over 27 test photos" in interval
    low, high = map(float, re.search(r"\(([\d.]+)–([\d.]+),", interval).groups())
    assert low <= 100 * accuracy <= high and high - low > 10, "27 photos: a wide interval"
    assert list(at.dataframe[0].value["class"]) == DEMO_CLASSES
    assert (run.folder / "evaluation.json").is_file()

    again = open_page("evaluate")  # a new session reads evaluation.json: no button to press
    assert {m.label: m.value for m in again.metric}["Test accuracy"] == metrics["Test accuracy"]
    assert "Evaluate on the test split" not in [b.label for b in again.button]


def test_an_evaluated_run_shows_its_interval_in_the_sidebar_curves_and_train(on_trained):
    from transfer_core.evaluation import evaluate

    run = on_trained["run"]
    evaluate(run)  # current for this model (the test above may run alone or not at all)
    for page in ("curves", "train"):
        captions = texts(open_page(page).caption)
        shown = [c for c in captions if "Wilson interval over 27 test photos" in c]
        assert any(c.startswith("On the test split: ") for c in shown), (page, captions)
        if page == "curves":
            assert any(c.startswith(f"{run.name} on the test split: ") for c in shown)
        else:
            assert any(c.startswith(":material/fact_check: On the test split:") for c in shown)


@pytest.fixture(scope="module")
def new_pictures(tmp_path_factory) -> dict[str, bytes]:
    """Demo-style pictures the model has never seen (another seed), one per class."""
    folder = make_demo_dataset(tmp_path_factory.mktemp("new") / "demo", per_class=1, seed=99)
    return {name: (folder / name / f"{name}_000.jpg").read_bytes() for name in DEMO_CLASSES}


PREDICTION = re.compile(r"### (forests|oceans|sunsets) · (\d{1,3}\.\d)%")


def predictions(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if PREDICTION.fullmatch(m.value)]


def test_predict_page_classifies_an_uploaded_picture(on_trained, new_pictures):
    at = open_page("predict")
    assert at.selectbox(key="predict_run").value == on_trained["run"].name
    assert texts(at.info) == ["Upload one or more photos. This model knows: "
                              "forests, oceans, sunsets."]

    at.file_uploader(key="photos").set_value(
        ("ocean.jpg", new_pictures["oceans"], "image/jpeg")).run()
    assert_no_exception(at)

    [heading] = predictions(at)
    share = float(PREDICTION.fullmatch(heading).group(2))
    assert 100 / 3 - 0.1 <= share <= 100  # the top class of three has at least a third
    assert not at.warning and not at.info
    [image] = at.image
    bars = charts(at)
    [figure] = bars.values()
    assert sorted(figure["data"][0]["y"]) == DEMO_CLASSES
    assert abs(sum(figure["data"][0]["x"]) - 1) < 1e-3


def test_predict_page_rejects_a_text_file_politely(on_trained):
    at = open_page("predict")
    at.file_uploader(key="photos").set_value(("notes.txt", b"just some words\n", "text/plain"))
    at.run()
    assert_no_exception(at)

    assert not predictions(at) and not at.error
    [warning] = texts(at.warning)
    assert warning.startswith("Sorry, notes.txt is not an image")
    assert "JPEG, PNG" in warning


def test_predict_page_handles_photos_and_a_text_file_in_one_upload(on_trained, new_pictures):
    at = open_page("predict")
    at.file_uploader(key="photos").set_value([
        ("sunset.jpg", new_pictures["sunsets"], "image/jpeg"),
        ("notes.txt", b"just some words\n", "text/plain"),
        ("forest.jpg", new_pictures["forests"], "image/jpeg"),
        ("sunset.jpg", new_pictures["sunsets"], "image/jpeg"),  # the same photo added twice
    ]).run()
    assert_no_exception(at)

    assert len(predictions(at)) == 3
    assert predictions(at)[0] == predictions(at)[2]
    assert [w.split(" ")[1] for w in texts(at.warning)] == ["notes.txt"]
    assert [image.captions for image in at.image] == [["sunset.jpg"], ["forest.jpg"],
                                                      ["sunset.jpg"]]
    assert len(charts(at)) == 3


def test_predict_page_overlays_the_heatmap_and_warns_on_a_foreign_photo(on_trained, new_pictures):
    """Grad-CAM over each photo with its opacity slider; a photo unlike the training ones
    (black and white stripes, where the demo has skies, seas and forests) is named as none of
    the classes, its probabilities still shown."""
    stripes = np.zeros((96, 96, 3), dtype="uint8")
    stripes[:, ::8] = stripes[:, 1::8] = stripes[:, 2::8] = stripes[:, 3::8] = 255
    foreign = io.BytesIO()
    Image.fromarray(stripes).save(foreign, "PNG")
    at = open_page("predict")
    at.file_uploader(key="photos").set_value([
        ("ocean.jpg", new_pictures["oceans"], "image/jpeg"),
        ("stripes.png", foreign.getvalue(), "image/png")]).run()
    assert_no_exception(at)

    slider = at.slider(key="heat_opacity")
    assert slider.label == "Heatmap opacity" and 0 < slider.value < 1
    assert [image.captions for image in at.image] == [["ocean.jpg"], ["stripes.png"]]
    [warning] = texts(at.warning)
    assert warning.startswith("This does not look like any of: forests, oceans, sunsets")
    assert len(predictions(at)) == 2 and len(charts(at)) == 2  # probabilities of both
    slider.set_value(0.0).run()  # the photo alone: the page redraws without recomputing
    assert_no_exception(at)
    assert len(at.image) == 2 and texts(at.warning) == [warning]
