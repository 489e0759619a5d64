"""The Compare page, driven through AppTest: plan a study and start it, see a finished study's
table, figure and plain words, and a damaged study.json named without breaking the page.

The finished study's runs are made without training: each has a finished status and an
evaluation.json, which is what the page reads (the training itself is test_studies.py's).
"""

from __future__ import annotations

import json

import pytest
from conftest import make_kaggle_dataset
from test_app import (
    assert_no_exception,
    button,
    clear_caches,
    open_page,
    texts,
    use_workspace,
)

from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.runs import Run, TrainConfig
from transfer_core.storage import write_json_atomic
from transfer_core.studies import Study, find_study

ACCURACY = {"feature_extraction": [0.90, 0.91, 0.89], "fine_tune": [0.95, 0.97, 0.96]}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    path = use_workspace(monkeypatch, tmp_path / "workspace")
    data = make_kaggle_dataset(tmp_path / "photos", per_class=12, size=48)
    manifest = split(scan(data, workers=1), SplitRequest(counts=(6, 3, 3))).save(path, "tiny")
    yield path, manifest
    clear_caches()


def finished_study(workspace, manifest) -> Study:
    base = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", weights="none",
                       image_size=48, epochs=1, fine_tune_epochs=1)
    study = Study.create(workspace, base, list(ACCURACY), [1, 2, 3], "done")
    study.start(lambda ws, config, name: Run.create(ws, config, name))
    for entry in study.entries():
        run = study.run_of(entry)
        run.update_status(state="finished", started=0.0, finished=60.0 * entry.seed)
        accuracy = ACCURACY[entry.strategy][entry.seed - 1]
        write_json_atomic(run.folder / "evaluation.json", {
            "split": "test", "accuracy": accuracy, "loss": 0.3, "images": 2000,
            "classes": ["cat", "dog"], "confusion_matrix": [[1, 0], [0, 1]], "per_class": {},
            "mistakes": [], "model_mtime_ns": None})  # no model.keras: this evaluation stands
    return study


def test_a_finished_study_shows_its_table_figure_and_plain_words(workspace):
    finished_study(*workspace)
    at = open_page("compare")
    assert at.selectbox(key="study_pick").value == "done"
    table = at.dataframe[0].value
    assert list(table["strategy"]) == ["feature extraction", "fine tune"]
    assert "95% t interval over 3 seeds" in table["mean (95% t interval)"][1]
    assert table["mean (95% t interval)"][1].startswith("96.0%")
    words = " ".join(texts(at.markdown))
    assert "fine_tune beat feature_extraction by 6.0 points" in words
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {trace.get("name") for trace in figure["data"]} >= {"feature extraction", "fine tune"}
    assert "paired" in " ".join(texts(at.caption))


def test_a_new_study_shows_its_estimate_and_starts_its_runs(workspace):
    path, _ = workspace
    at = open_page("compare", compare_strategies=["from_scratch", "feature_extraction"],
                   compare_weights="none", compare_size_mobilenet_v2=48, compare_seeds=2,
                   compare_epochs=1, study_pick="a new study")
    assert any("Estimated time on this machine" in c for c in texts(at.caption))
    button(at, "Start the study").click().run()
    assert_no_exception(at)
    [name] = [p.name for p in (path / "studies").iterdir()]
    study = find_study(path, name)
    try:
        assert len([e for e in study.entries() if e.run]) == 4
        assert at.session_state["study_name"] == name
    finally:
        study.stop()  # the queued workers leave the line


def test_a_damaged_study_json_is_named_and_the_page_goes_on(workspace):
    path, manifest = workspace
    finished_study(path, manifest)
    broken = path / "studies" / "broken"
    broken.mkdir()
    (broken / "study.json").write_text('{"runs": 3')
    at = open_page("compare", study_name="broken")
    assert any("Study broken is damaged" in e for e in texts(at.error))
    at.selectbox(key="study_pick").select("done").run()
    assert_no_exception(at)
    assert at.dataframe  # the other study still shows
