"""Studies: strategies × seeds as ordinary runs, kept in study.json; the table's statistics.

The bookkeeping tests queue with a `launch` that only creates the run folder (no training) and
then write the states a real run would reach; the end-to-end test trains for real, through
the CLI and the training queue.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_kaggle_dataset
from scipy import stats

from transfer_core import cli
from transfer_core.datasets import SplitRequest, scan, split
from transfer_core.errors import RunError
from transfer_core.runs import Run, TrainConfig
from transfer_core.studies import Study, find_study, list_studies, summarize, table_text

STRATEGIES = ["feature_extraction", "fine_tune"]


@pytest.fixture
def manifest(tmp_path, workspace):
    data = make_kaggle_dataset(tmp_path / "photos", per_class=12, size=48)
    return split(scan(data, workers=1), SplitRequest(counts=(6, 3, 3))).save(workspace, "tiny")


@pytest.fixture
def study(manifest, workspace):
    base = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", weights="none",
                       image_size=48, epochs=1)
    return Study.create(workspace, base, STRATEGIES, [1, 2, 3], "ladder")


def create_only(workspace, config, name):
    return Run.create(workspace, config, name)


def finish(run: Run, seconds: float = 10.0):
    run.update_status(state="finished", started=100.0, finished=100.0 + seconds)


# --- bookkeeping -------------------------------------------------------------------------

def test_start_queues_one_run_per_strategy_and_seed_and_names_them(study, workspace):
    queued = study.start(create_only)
    assert len(queued) == 6
    saved = json.loads(study.path.read_text())
    pairs = {(e["strategy"], e["seed"]) for e in saved["runs"]}
    assert pairs == {(s, k) for s in STRATEGIES for k in (1, 2, 3)}
    for entry in study.entries():
        config = study.run_of(entry).config
        assert (config.strategy, config.seed, config.epochs) == (entry.strategy, entry.seed, 1)


def test_a_rerun_or_second_reader_sees_the_same_study_and_queues_nothing(study, workspace):
    first = study.start(create_only)
    again = find_study(workspace, "ladder")  # what a reloaded page or another browser does
    assert [e.run for e in again.entries()] == first
    assert again.start(create_only) == []
    assert [s.name for s in list_studies(workspace)] == ["ladder"]


def test_a_stopped_run_leaves_the_study_partial_and_is_queued_again(study, workspace):
    study.start(create_only)
    runs = {(e.strategy, e.seed): study.run_of(e) for e in study.entries()}
    for key, run in runs.items():
        finish(run, seconds=20 if key[0] == "fine_tune" else 10)
    runs["fine_tune", 2].update_status(state="stopped")
    accuracy = {"feature_extraction": 0.90, "fine_tune": 0.95}
    results = study.results(evaluate=lambda run: {
        "accuracy": accuracy[run.config.strategy] + run.config.seed / 100, "images": 2000})
    progress = study.progress()
    assert (progress["finished"], progress["total"], progress["waiting"]) == (5, 6, False)
    assert results["runs_scored"] == 5 and not results["complete"]
    fine = results["strategies"][1]
    assert fine["seeds_done"] == 2 and fine["mean"] == pytest.approx((0.96 + 0.98) / 2)
    [pair] = results["pairs"]
    assert pair["seeds"] == [1, 3]  # only the seeds both strategies finished
    assert "stopped" in table_text(results)
    requeued = study.start(create_only)
    assert requeued == ["ladder-fine_tune-seed2-2"]  # a new folder; the stopped run is kept
    assert runs["fine_tune", 2].folder.exists()


def test_a_deleted_run_reads_as_missing_and_is_queued_again(study, workspace):
    import shutil

    study.start(create_only)
    entry = study.entries()[0]
    shutil.rmtree(study.run_of(entry).folder)
    assert study.state_of(entry) == "missing"
    assert len(study.start(create_only)) == 1


UNKNOWN_STRATEGY = ('{"settings": {"manifest": "m"}, "strategies": ["nope"], "seeds": [1], '
                    '"runs": []}')


@pytest.mark.parametrize("content", ["{not json", "[]", '{"settings": {}, "strategies": "x"}',
                                     UNKNOWN_STRATEGY])
def test_a_damaged_study_json_is_one_line_and_hides_no_other_study(study, workspace, content):
    other = Study(study.folder.parent / "other")
    other.folder.mkdir()
    other.path.write_text(content)
    assert {s.name for s in list_studies(workspace)} == {"ladder", "other"}
    assert other.problem().startswith("Study other is damaged: ")
    with pytest.raises(RunError, match="damaged") as caught:
        other.results()
    assert "\n" not in str(caught.value)
    assert study.problem() is None


def test_a_study_name_is_not_taken_twice(study, manifest, workspace):
    base = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", weights="none",
                       image_size=48)
    with pytest.raises(RunError, match="exists already"):
        Study.create(workspace, base, STRATEGIES, [1], "ladder")


def test_a_bad_plan_is_refused_before_anything_is_written(manifest, workspace):
    base = TrainConfig(manifest=str(manifest), backbone="mobilenet_v2", weights="none",
                       image_size=40)
    with pytest.raises(RunError, match="strategies must be"):
        Study.create(workspace, base, ["fine_tune", "magic"], [1], "bad")
    with pytest.raises(RunError, match="at least 46 pixels"):  # from_scratch at 40 px
        Study.create(workspace, base, ["from_scratch"], [1], "small")
    assert list_studies(workspace) == []


# --- the statistics ------------------------------------------------------------------------

def test_the_table_matches_scipy_for_fixed_accuracies():
    a = {1: 0.971, 2: 0.968, 3: 0.975}  # fine_tune
    b = {1: 0.962, 2: 0.960, 3: 0.961}  # feature_extraction
    rows = [{"strategy": s, "seed": k, "accuracy": acc[k], "seconds": 60.0 * k,
             "state": "finished"}
            for s, acc in (("feature_extraction", b), ("fine_tune", a)) for k in (1, 2, 3)]
    results = summarize(rows, ["feature_extraction", "fine_tune"], [1, 2, 3])
    fine = results["strategies"][1]
    values = list(a.values())
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert fine["mean"] == pytest.approx(np.mean(values))
    assert (fine["low"], fine["high"]) == (pytest.approx(low), pytest.approx(high))
    assert fine["mean_seconds"] == pytest.approx(120.0)
    [pair] = results["pairs"]
    differences = np.subtract(values, list(b.values()))
    assert pair["a"] == "fine_tune" and pair["difference"] == pytest.approx(differences.mean())
    assert pair["p_value"] == pytest.approx(stats.ttest_rel(values, list(b.values())).pvalue)
    assert pair["text"].startswith("fine_tune beat feature_extraction by 1.0 points")


def test_one_seed_gives_no_interval_and_no_test():
    rows = [{"strategy": s, "seed": 1, "accuracy": acc, "seconds": None, "state": "finished"}
            for s, acc in (("feature_extraction", 0.9), ("fine_tune", 0.95))]
    results = summarize(rows, ["feature_extraction", "fine_tune"], [1])
    assert results["strategies"][0]["low"] is None
    assert "one seed" in results["strategies"][0]["interval_text"]
    assert results["pairs"][0]["p_value"] is None


# --- end to end ----------------------------------------------------------------------------

def test_compare_trains_two_strategies_over_two_seeds_through_the_queue(manifest, workspace,
                                                                        capsys):
    code = cli.main(["compare", "--data", str(manifest), "--strategies",
                     "from_scratch,feature_extraction", "--seeds", "2", "--backbone",
                     "mobilenet_v2", "--weights", "none", "--image-size", "48", "--epochs", "1",
                     "--batch-size", "4", "--name", "tiny", "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert results["complete"] and results["runs_scored"] == 4
    assert [row["strategy"] for row in results["strategies"]] == ["from_scratch",
                                                                  "feature_extraction"]
    for row in results["strategies"]:
        assert [r["seed"] for r in row["runs"]] == [1, 2]
        assert all(r["images"] == 6 and 0 <= r["accuracy"] <= 1 for r in row["runs"])
        assert row["mean_seconds"] > 0
    assert len(results["pairs"]) == 1 and results["pairs"][0]["seeds"] == [1, 2]
    # Reporting again reads the same study, by its name alone: nothing trains twice.
    assert cli.main(["compare", "--name", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["strategies"] == results["strategies"]
