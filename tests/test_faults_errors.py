"""Faults a user causes, and what they see: one line in the CLI (exit 1), an error box on a page,
never a traceback. Files deleted after the split, a damaged or unsafe model.keras, path strings
no file system takes, an OSError; each upload decoded once; no TensorFlow start-up chatter."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import transfer_core.evaluation as evaluation
import transfer_core.inputs as inputs
from conftest import make_folder_dataset
from test_app import assert_no_exception, button, open_page, picture, scan_for_components_once
from transfer_core import quiet
from transfer_core.cli import main
from transfer_core.datasets import Manifest, SplitRequest, load_manifest, scan, split
from transfer_core.errors import DatasetError, ImageError, RunError
from transfer_core.predict import Predictor, load_model
from transfer_core.runs import Run, TrainConfig
from transfer_core.training import train

PROJECT = Path(__file__).resolve().parents[1]
TINY = dict(backbone="vgg16", weights="none", image_size=32, batch_size=4, learning_rate=1e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Two colours, 4/2/2 per class, and one finished one-epoch run on cached features."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_folder_dataset(root / "colours", per_class=8, classes=("red", "blue"))
    workspace = root / "workspace"
    manifest = split(scan(data, workers=1), SplitRequest(counts=(4, 2, 2))).save(workspace, "tiny")
    run = Run.create(workspace, TrainConfig(manifest=str(manifest), epochs=1, **TINY), "tiny")
    assert train(run, workspace)["state"] == "finished"
    return {"workspace": workspace, "manifest": manifest, "run": run}


@pytest.fixture
def hide(tmp_path):
    """Take files away for one test, as a user deleting them would; they come back afterwards."""
    moved = []

    def take(path: str) -> str:
        away = tmp_path / "taken" / str(len(moved))
        away.parent.mkdir(exist_ok=True)
        shutil.move(path, away)
        moved.append((away, path))
        return path

    yield take
    for away, path in moved:
        shutil.move(away, path)


def files(tiny, split_name: str) -> list[str]:
    return load_manifest(tiny["manifest"]).files(split_name)[0]


def cli(capsys, *argv) -> tuple[int, list[str]]:
    """Exit status and stderr's lines of `python -m transfer_core ARGV`, run in this process."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def one_error_line(lines: list[str]) -> str:
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def copy_run(tiny, workspace: Path, name: str = "copy") -> Run:
    """The tiny run in a workspace of its own, to damage or evaluate without touching the rest."""
    folder = workspace / "runs" / name
    shutil.copytree(tiny["run"].folder, folder)
    return Run(folder)


# ------------------------------------------------------------------ files deleted after the split


def test_cli_evaluate_names_the_missing_test_files_in_one_line(tiny, hide, capsys):
    gone = [hide(path) for path in files(tiny, "test")[:2]]
    code, lines = cli(capsys, "evaluate", "tiny", "--workspace", tiny["workspace"])
    assert code == 1
    line = one_error_line(lines)
    assert line.startswith("error: 2 of the 4 test files of the split are missing, e.g. ")
    assert gone[0] in line and "split again" in line
    assert not (tiny["run"].folder / "evaluation.json").exists()


def test_cli_extract_stops_before_computing_anything(tiny, hide, capsys):
    hide(files(tiny, "validation")[1])
    code, lines = cli(capsys, "extract", "--data", tiny["manifest"], "--split", "validation",
                      "--backbone", "vgg16", "--weights", "none", "--image-size", "32",
                      "--workspace", tiny["workspace"])
    assert code == 1
    assert "1 of the 4 validation files of the split are missing" in one_error_line(lines)


def test_cli_train_stops_before_making_a_run_folder(tiny, hide, capsys, tmp_path):
    hide(files(tiny, "train")[0])
    code, lines = cli(capsys, "train", "--data", tiny["manifest"], "--backbone", "vgg16",
                      "--weights", "none", "--image-size", "32", "--epochs", "1",
                      "--run-dir", tmp_path / "never", "--workspace", tiny["workspace"])
    assert code == 1
    assert "1 of the 8 train files of the split are missing" in one_error_line(lines)
    assert not (tmp_path / "never").exists()


def test_a_file_that_goes_missing_during_evaluation_is_one_line(tiny, hide, monkeypatch):
    """Deleted between the check and the decoding: the reason and the fix, no FileNotFoundError."""
    victim = files(tiny, "test")[3]

    def check_then_delete(paths, split_name=""):
        inputs.check_split_files(paths, split_name)
        hide(victim)

    monkeypatch.setattr(evaluation, "check_split_files", check_then_delete)
    with pytest.raises(ImageError) as caught:
        evaluation.evaluate(tiny["run"], force=True)
    assert str(caught.value) == (f"{victim} is missing: the file changed after the split; "
                                 f"{inputs.SPLIT_AGAIN}.")


@pytest.fixture
def on_the_fly_run(tiny, tmp_path) -> Run:
    """A run that reads the photos through tf.data every epoch (no feature cache)."""
    config = TrainConfig(manifest=str(tiny["manifest"]), strategy="feature_extraction_augmented",
                         view_bank=0, epochs=1, **TINY)
    return Run.create(tmp_path / "workspace", config, "on-the-fly")


def test_training_on_the_fly_with_files_missing_fails_in_one_line(tiny, hide, on_the_fly_run):
    hide(files(tiny, "train")[5])
    status = train(on_the_fly_run, on_the_fly_run.folder.parent.parent)
    assert status["state"] == "failed"
    assert status["error"].startswith("1 of the 8 files of the split are missing")


@pytest.mark.parametrize("damage", ["delete", "overwrite"])
def test_a_photo_that_goes_bad_while_training_fails_the_run_in_one_line(
        tiny, hide, on_the_fly_run, monkeypatch, damage):
    """After the up-front check, inside model.fit: tf.data's 2,000-character "Graph execution
    error" becomes the file's name, the reason and the fix."""
    victim, check = files(tiny, "train")[2], inputs.check_split_files

    def check_then_damage(paths, split_name=""):
        check(paths, split_name)
        if victim in paths:  # the training split, not the validation split
            hide(victim)
            if damage == "overwrite":
                Path(victim).write_text("not a photo any more")

    monkeypatch.setattr(inputs, "check_split_files", check_then_damage)
    try:
        status = train(on_the_fly_run, on_the_fly_run.folder.parent.parent)
    finally:
        Path(victim).unlink(missing_ok=True)
    assert status["state"] == "failed"
    error = status["error"]
    assert "\n" not in error and len(error) < 400 and "Graph execution" not in error, error
    reason = "is missing" if damage == "delete" else "is not an image"
    assert error.startswith(f"{victim} {reason}") and error.endswith(f"{inputs.SPLIT_AGAIN}.")


def test_check_split_files_counts_every_missing_file(tmp_path):
    present = tmp_path / "a.png"
    present.write_bytes(b"x")
    paths = [str(present), str(tmp_path / "b.png"), str(tmp_path / "c.png")]
    with pytest.raises(DatasetError, match=r"^2 of the 3 test files of the split are missing, "
                                           rf"e\.g\. {tmp_path}/b\.png: split again"):
        inputs.check_split_files(paths, "test")
    inputs.check_split_files(paths[:1], "test")  # nothing missing: no error


# ------------------------------------------------------------------ model.keras: damaged, unsafe


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _config_cut(path: Path) -> None:
    """A complete zip whose config.json is cut in the middle."""
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    members["config.json"] = members["config.json"][:40]
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)


def _no_weights(path: Path) -> None:
    with zipfile.ZipFile(path) as source:
        members = {n: source.read(n) for n in source.namelist() if "weights" not in n}
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)


def _lambda_model(path: Path) -> None:
    """A model that runs Python code on loading unless safe_mode is off."""
    inputs_ = keras.Input((32, 32, 3))
    keras.Model(inputs_, keras.layers.Lambda(lambda x: x[:, :1, 0, 0] * 0.5)(inputs_)).save(path)


DAMAGES = [_truncated, _random_bytes, _empty, _config_cut, _no_weights]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_model_is_called_damaged_not_missing(tiny, tmp_path, damage):
    run = copy_run(tiny, tmp_path / "workspace")
    damage(run.model_path)
    with pytest.raises(RunError) as caught:
        load_model(run.model_path)
    message = str(caught.value)
    assert message.startswith("model.keras in run copy is damaged or incomplete (")
    assert message.endswith("): train again.") and "\n" not in message
    assert "File not found" not in message


def test_missing_damaged_and_unsafe_models_have_three_different_messages(tiny, tmp_path):
    workspace = tmp_path / "workspace"
    runs = {kind: copy_run(tiny, workspace, kind) for kind in ("missing", "damaged", "unsafe")}
    runs["missing"].model_path.unlink()
    _truncated(runs["damaged"].model_path)
    _lambda_model(runs["unsafe"].model_path)
    messages = {}
    for kind, run in runs.items():
        with pytest.raises(RunError) as caught:
            load_model(run.model_path)
        messages[kind] = str(caught.value)
    assert messages["missing"].startswith("There is no model at ")
    assert "damaged or incomplete" in messages["damaged"]
    assert messages["unsafe"] == ("model.keras in run unsafe holds Python code (a Lambda layer), "
                                  "which is never run from a file, for safety: train again.")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("damage", [_truncated, _lambda_model], ids=["truncated", "lambda"])
def test_cli_reports_a_bad_model_in_one_line(tiny, tmp_path, capsys, command, damage):
    workspace = tmp_path / "workspace"
    damage(copy_run(tiny, workspace).model_path)
    extra = [files(tiny, "test")[0]] if command == "predict" else []
    code, lines = cli(capsys, command, "copy", *extra, "--workspace", workspace)
    assert code == 1
    assert one_error_line(lines).startswith("error: model.keras in run copy ")


# ------------------------------------------------------------------ path strings and OSErrors


LONG = "/tmp/" + "x" * 5000
LONG_NAME = "/tmp/" + "y" * 300
BAD_PATHS = {"nul": ("/tmp/a\0b", "contains a NUL byte"),
             "long": (LONG, "is 5,005 characters long"),
             "long name": (LONG_NAME, "has a name of 300 characters")}


@pytest.mark.parametrize("kind", BAD_PATHS)
@pytest.mark.parametrize("argv", [
    ["scan", "{}"], ["split", "{}"], ["split", "data", "--layout", "{}"],
    ["predict", "run", "{}"], ["predict", "{}", "photo.jpg"], ["evaluate", "{}"], ["stop", "{}"],
    ["extract", "--data", "{}"], ["train", "--data", "{}"], ["train", "--data", "m.json",
                                                                 "--weights", "{}"],
    ["runs", "--workspace", "{}"],
], ids=lambda argv: " ".join(argv))
def test_a_path_no_file_system_takes_is_one_line_for_every_command(capsys, kind, argv):
    path, reason = BAD_PATHS[kind]
    code, lines = cli(capsys, *[path if a == "{}" else a for a in argv])
    assert code == 1
    line = one_error_line(lines)
    assert reason in line and "check the argument" in line and len(line) < 300


def test_a_full_disk_while_saving_the_manifest_is_one_line(folder_dataset, workspace, capsys,
                                                           monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(workspace / "manifests"))

    monkeypatch.setattr(Manifest, "save", no_space)
    code, lines = cli(capsys, "split", folder_dataset, "--counts", "2,1,1", "--json")
    assert code == 1
    assert one_error_line(lines) == (f"error: No space left on device ({workspace}/manifests): "
                                     "free some space or choose another disk.")


def test_a_workspace_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, lines = cli(capsys, "runs", "--workspace", tmp_path / "file" / "workspace")
    assert code == 1
    assert one_error_line(lines).startswith("error: Not a directory (")


def test_predict_names_a_missing_photo_and_a_folder_and_classifies_the_rest(tiny, capsys):
    good = files(tiny, "test")[0]
    code = main(["predict", "tiny", "/nowhere/photo.jpg", str(PROJECT), good,
                 "--workspace", str(tiny["workspace"])])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "/nowhere/photo.jpg: error: /nowhere/photo.jpg does not exist"
    assert out[1] == f"{PROJECT}: error: {PROJECT} is a folder, not an image"
    assert out[2].startswith(f"{good}: ") and "error" not in out[2]


# ------------------------------------------------------------------ the pages


@pytest.fixture
def page_workspace(tmp_path, monkeypatch, tiny):
    """A workspace of its own holding a copy of the tiny run, as the app's workspace."""
    from test_app import use_workspace

    scan_for_components_once(monkeypatch)
    workspace = use_workspace(monkeypatch, tmp_path / "workspace")
    return workspace, copy_run(tiny, workspace)


def errors_shown(at) -> list[str]:
    assert_no_exception(at)
    return [e.value for e in at.error]


def test_evaluate_page_says_which_files_are_missing(page_workspace, tiny, hide):
    hide(files(tiny, "test")[1])
    at = open_page("evaluate")
    button(at, "Evaluate on the test split").click().run()
    [error] = errors_shown(at)
    assert error.startswith("1 of the 4 test files of the split are missing") and \
        "split again" in error
    assert not at.metric


@pytest.mark.parametrize("page", ["evaluate", "predict"])
@pytest.mark.parametrize("damage, says", [(_truncated, "is damaged or incomplete"),
                                          (_lambda_model, "holds Python code")],
                         ids=["truncated", "lambda"])
def test_pages_say_the_model_is_damaged_or_unsafe(page_workspace, page, damage, says):
    _workspace, run = page_workspace
    damage(run.model_path)
    at = open_page(page)
    if damage is _truncated:  # not a whole archive: not offered, and the page says why
        assert not at.selectbox and not at.button
        [error] = [w.value for w in at.warning if "model.keras" in w.value]
    else:
        if page == "evaluate":
            button(at, "Evaluate on the test split").click().run()
        [error] = errors_shown(at)
    assert error.startswith(f"model.keras in run {run.name} {says}") and "train again" in error


def test_predict_page_decodes_each_upload_once(page_workspace, monkeypatch):
    uploads = [("red.png", picture((200, 40, 30), size=900), "image/png"),
               ("notes.txt", b"just words", "text/plain"),
               ("blue.jpg", picture((30, 60, 200), fmt="JPEG"), "image/jpeg")]
    contents = {data: name for name, data, _ in uploads}
    opened, real_open = [], Image.open

    def counting_open(source, *args, **kwargs):  # Streamlit's own re-reads of what it encodes
        if isinstance(source, io.BytesIO) and source.getvalue() in contents:  # are not counted
            opened.append(contents[source.getvalue()])
        return real_open(source, *args, **kwargs)

    at = open_page("predict")
    monkeypatch.setattr(Image, "open", counting_open)
    at.file_uploader(key="photos").set_value(uploads).run()
    assert errors_shown(at) == []
    # A file that is no picture is opened a second time, for its header only, to name its kind.
    decoded = [name for name in opened if name != "notes.txt"]
    # The PNG once: thumbnail and model share it. The JPEG a second time for the model, at the
    # reduced scale training decoded it at (draft mode), so it scores as on Evaluate.
    assert sorted(decoded) == ["blue.jpg", "blue.jpg", "red.png"], decoded
    assert [image.captions for image in at.image] == [["red.png"], ["blue.jpg"]]
    sorry = [w.value for w in at.warning if w.value.startswith("Sorry")]
    assert [text.split(" ")[1] for text in sorry] == ["notes.txt"]
    assert len([m for m in at.markdown if m.value.startswith("### ")]) == 2


def test_a_decoded_photo_predicts_as_its_bytes_and_its_path(tiny):
    predictor = Predictor(tiny["run"])
    path = files(tiny, "test")[0]
    data = Path(path).read_bytes()
    from transfer_core.images import open_rgb

    by_path, by_bytes, by_image = predictor.predict([path, data, open_rgb(data)])
    assert by_path["probabilities"] == by_bytes["probabilities"] == by_image["probabilities"]


# ------------------------------------------------------------------ quiet TensorFlow


def _cli_process(*argv, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_VARIABLE)}
    return subprocess.run([sys.executable, "-m", "transfer_core", *map(str, argv)],
                          cwd=PROJECT, env={**clean, "PYTHONPATH": str(PROJECT), **env},
                          capture_output=True, text=True, timeout=180)


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if quiet.NOISE.search(line) or "cuInit" in line or "oneDNN" in line or "absl" in line]


def test_a_command_that_loads_tensorflow_prints_no_start_up_lines(tiny, tmp_path):
    """Measured before: 7 lines (absl ×2, oneDNN ×2, CUDA drivers ×2, E0000 … cuInit)."""
    photo = files(tiny, "test")[0]
    quiet_run = _cli_process("predict", "tiny", photo, "--workspace", tiny["workspace"])
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert quiet_run.stderr == "" and quiet_run.stdout.startswith(photo)

    verbose = _cli_process("predict", "tiny", photo, "--workspace", tiny["workspace"],
                           "--verbose")
    assert verbose.returncode == 0 and _noise(verbose.stderr), verbose.stderr
    by_variable = _cli_process("predict", "tiny", photo, "--workspace", tiny["workspace"],
                               **{quiet.VERBOSE_VARIABLE: "1"})
    assert _noise(by_variable.stderr)


def test_a_user_error_after_loading_tensorflow_is_still_one_line(tiny, hide):
    hide(files(tiny, "test")[0])
    result = _cli_process("evaluate", "tiny", "--workspace", tiny["workspace"])
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: 1 of the 4 test files of the split are missing")


def test_the_filter_passes_on_every_line_that_is_not_start_up_noise(capfd):
    with quiet.filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"E0000 00:00:1.2 6101 cuda_platform.cc:52] failed call to cuInit: "
                    b"INTERNAL: CUDA error\n"
                    b"E0000 00:00:1.3 6101 some_kernel.cc:9] a real error\n")
        print("from Python", file=sys.stderr)
    # (pytest's sys.stderr does not write to descriptor 2, so the order is not compared)
    assert sorted(capfd.readouterr().err.splitlines()) == [
        "E0000 00:00:1.3 6101 some_kernel.cc:9] a real error", "from Python"]


def test_the_app_prints_no_start_up_lines_when_a_page_loads_tensorflow(tiny):
    """The Predict page loads the model (TensorFlow) in a fresh server process."""
    script = ("from streamlit.testing.v1 import AppTest\n"
              "at = AppTest.from_file('app.py', default_timeout=120)\n"
              "at.run()\n"
              "at.switch_page('app_pages/predict.py').run()\n"
              "assert not at.exception and not at.error\n"
              "import sys; assert 'tensorflow' in sys.modules\n")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_VARIABLE)}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True,
                            text=True, timeout=180,
                            env={**clean, "TRANSFER_LAB_WORKSPACE": str(tiny["workspace"])})
    assert result.returncode == 0, result.stderr
    assert _noise(result.stderr) == []
