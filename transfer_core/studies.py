"""A study: the same training repeated over chosen strategies × seeds, and whether one strategy
really beats another.

A study is a folder, workspace/studies/<name>/study.json, that names ordinary runs (one per
strategy and seed, same dataset, backbone and settings) queued through the training queue
(jobs.start). The runs keep everything; study.json only says which runs belong together, so a
stopped, failed or deleted run leaves the study partial (its results use what finished, and
`start` queues what is missing again), never broken. A damaged study.json makes that one study
read as damaged, never an exception that would hide the others.

The results: each finished run's test accuracy (evaluation.evaluate: the same test split for
every run), per strategy the mean with Student's t interval over seeds (a handful of seeds, so
not the normal's 1.96: with 3 seeds t's 4.30 makes the interval honest about how little three
numbers say), and per pair of strategies a paired t-test over seeds. Paired, because seed k of
both strategies shares the split, the test photos and the seed's draws: what varies with the
seed (which photos are hard, the head's start) cancels in the difference, and the test asks
only whether the mean difference is zero. t, because the spread of the differences is
estimated from the same few seeds (stats.paired_comparison; Dietterich 1998).
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import config as paths
from .errors import RunError, TransferLabError
from .runs import STRATEGIES, Run, TrainConfig
from .stats import comparison_text, mean_interval, paired_comparison
from .storage import DamagedFile, read_json_object, write_failure, write_json_atomic

STUDY_FILE = "study.json"
# The chapter's learning rate for its from-scratch convnet (5.2: RMSprop 1e-4); the transfer
# strategies keep TrainConfig's 2e-5 (5.3).
SCRATCH_LEARNING_RATE = 1e-4
# A run in these states will not finish by itself: `start` queues its (strategy, seed) again.
_RESTARTABLE = ("stopped", "failed", "interrupted", "damaged", "missing")


def studies_dir(workspace: str | Path) -> Path:
    folder = Path(workspace) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class StudyEntry:
    strategy: str
    seed: int
    run: str | None  # the run's folder name under workspace/runs, None until queued


class Study:
    """One study folder and the typed reads and writes of its study.json."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def path(self) -> Path:
        return self.folder / STUDY_FILE

    @property
    def workspace(self) -> Path:
        return self.folder.parent.parent

    @classmethod
    def create(cls, workspace: str | Path, base: TrainConfig, strategies, seeds,
               name: str | None = None,
               scratch_learning_rate: float = SCRATCH_LEARNING_RATE) -> Study:
        """A new study (not started): `base` gives every setting but the strategy and seed."""
        strategies, seeds = check_plan(strategies, seeds)
        for strategy in strategies:  # a setting one strategy refuses fails now, not in a run
            config_for(base.to_dict(), strategy, seeds[0], scratch_learning_rate)
        stem = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{base.backbone}-{len(seeds)}seeds"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip(".") or "study"
        folder = studies_dir(workspace) / stem
        if folder.exists():
            raise RunError(f"A study named {stem!r} exists already: resume it with its name, "
                           "or choose another name.")
        study = cls(folder)
        study._write({"name": stem, "created": time.time(), "settings": base.to_dict(),
                      "strategies": strategies, "seeds": seeds,
                      "scratch_learning_rate": scratch_learning_rate,
                      # Seed by seed: a study cut short still has whole pairs to compare.
                      "runs": [{"strategy": s, "seed": k, "run": None}
                               for k, s in itertools.product(seeds, strategies)]})
        return study

    # ---- reading ----------------------------------------------------------------------------

    def read(self) -> dict:
        """study.json, checked; RunError (one line: which file, why) when it is damaged."""
        try:
            data = read_json_object(self.path)
            if data is None:
                raise DamagedFile(self.path, "missing")
            _check_document(data, self.path)
        except DamagedFile as exc:
            raise RunError(f"Study {self.name} is damaged: {exc}") from None
        return data

    def problem(self) -> str | None:
        try:
            self.read()
        except RunError as exc:
            return str(exc)
        return None

    def entries(self) -> list[StudyEntry]:
        return [StudyEntry(e["strategy"], e["seed"], e["run"]) for e in self.read()["runs"]]

    def run_of(self, entry: StudyEntry) -> Run | None:
        """The entry's run, None when it was never queued or its folder is gone."""
        folder = paths.runs_dir(self.workspace) / entry.run if entry.run else None
        return Run(folder) if folder and (folder / "config.json").exists() else None

    def state_of(self, entry: StudyEntry) -> str:
        run = self.run_of(entry)
        if run is None:
            return "missing" if entry.run else "not queued"
        return run.status().get("state", "damaged")

    # ---- queuing ----------------------------------------------------------------------------

    def start(self, launch=None) -> list[str]:
        """Queue every (strategy, seed) that has no run that is queued, running or finished;
        returns the names of the runs queued. `launch(workspace, config, name) -> Run` is
        jobs.start unless given (tests pass one that trains in-process)."""
        from .jobs import start as jobs_start

        launch = launch or jobs_start
        data = self.read()
        queued = []
        for item in data["runs"]:
            entry = StudyEntry(item["strategy"], item["seed"], item["run"])
            if entry.run and self.state_of(entry) not in _RESTARTABLE:
                continue
            config = config_for(data["settings"], entry.strategy, entry.seed,
                                data.get("scratch_learning_rate", SCRATCH_LEARNING_RATE))
            run = launch(self.workspace, config, f"{self.name}-{entry.strategy}-seed{entry.seed}")
            item["run"] = run.name
            self._write(data)  # after each: a crash between two starts loses no run's name
            queued.append(run.name)
        return queued

    def stop(self) -> None:
        """Ask every queued or running run of the study to stop."""
        for entry in self.entries():
            run = self.run_of(entry)
            if run is not None and run.status().get("state") in ("queued", "running"):
                run.request_stop()

    def _write(self, data: dict) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, data)
        except OSError as exc:
            from .storage import StorageError

            raise StorageError(write_failure(exc, self.folder, "writing the study")) from None

    # ---- following ------------------------------------------------------------------------

    def progress(self) -> dict:
        """Runs finished / total, the run training now, and each entry's state."""
        rows = []
        for entry in self.entries():
            run = self.run_of(entry)
            status = run.status() if run else {}
            rows.append({"strategy": entry.strategy, "seed": entry.seed, "run": entry.run,
                         "state": self.state_of(entry), "stage": status.get("stage"),
                         "progress": status.get("progress"), "error": status.get("error")})
        current = next((r for r in rows if r["state"] == "running"), None)
        ended = [r for r in rows if r["state"] not in ("queued", "running", "not queued")]
        return {"total": len(rows), "finished": sum(r["state"] == "finished" for r in rows),
                "ended": len(ended), "current": current, "runs": rows,
                "waiting": any(r["state"] in ("queued", "running") for r in rows)}

    # ---- results ----------------------------------------------------------------------------

    def results(self, evaluate=None, progress=None) -> dict:
        """Each finished run's test accuracy and wall time, per-strategy means with t intervals
        and pairwise paired t-tests (see `summarize`). `evaluate(run) -> dict` is
        evaluation.evaluate unless given; it keeps its result in the run's evaluation.json, so
        a second call costs nothing."""
        if evaluate is None:
            from .evaluation import evaluate
        data = self.read()
        per_run = []
        for entry in self.entries():
            run = self.run_of(entry)
            row = {"strategy": entry.strategy, "seed": entry.seed, "run": entry.run,
                   "state": self.state_of(entry), "accuracy": None, "images": None,
                   "seconds": None, "error": None}
            if run is not None and row["state"] == "finished":
                status = run.status()
                row["seconds"] = _wall_seconds(status)
                if progress:
                    progress(run.name)
                try:
                    evaluation = evaluate(run)
                    row.update(accuracy=evaluation["accuracy"], images=evaluation["images"])
                except TransferLabError as exc:  # its model is damaged: the study goes on
                    row["error"] = str(exc)
            per_run.append(row)
        return summarize(per_run, data["strategies"], data["seeds"]) | {
            "name": self.name, "settings": data["settings"],
            "scratch_learning_rate": data.get("scratch_learning_rate")}


def config_for(settings: dict, strategy: str, seed: int,
               scratch_learning_rate: float = SCRATCH_LEARNING_RATE) -> TrainConfig:
    """One run's config: the study's settings with this strategy and seed."""
    changes = {"strategy": strategy, "seed": seed}
    if strategy == "from_scratch":
        changes["learning_rate"] = scratch_learning_rate
    return TrainConfig.from_dict({**settings, **changes})


def check_plan(strategies, seeds) -> tuple[list[str], list[int]]:
    strategies = list(dict.fromkeys(strategies))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or len(strategies) < 1:
        raise RunError(f"strategies must be names from {', '.join(STRATEGIES)} "
                       f"(got {', '.join(unknown) or 'none'}).")
    seeds = list(dict.fromkeys(int(k) for k in seeds))
    if not seeds:
        raise RunError("seeds must be at least one seed (2 or more for an interval).")
    return strategies, seeds


def seeds_for(count: int) -> list[int]:
    """`--seeds N`: seeds 1 … N, the same for every strategy (that is what pairs them)."""
    if count < 1:
        raise RunError(f"seeds must be at least 1 (got {count}); 3 or more give a useful "
                       "interval.")
    return list(range(1, count + 1))


def summarize(per_run: list[dict], strategies: list[str], seeds: list[int]) -> dict:
    """The table from per-run rows (strategy, seed, accuracy, seconds): per strategy the seeds'
    accuracies, their mean with a 95% t interval and the mean wall time; per pair of
    strategies the paired t-test over the seeds both finished, in plain words."""
    table = []
    for strategy in strategies:
        rows = [r for r in per_run if r["strategy"] == strategy]
        scored = [r for r in rows if r["accuracy"] is not None]
        interval = mean_interval([r["accuracy"] for r in scored]) if scored else None
        times = [r["seconds"] for r in rows if r["seconds"] is not None]
        table.append({
            "strategy": strategy, "runs": rows, "seeds_done": len(scored),
            "mean": interval.mean if interval else None,
            "low": interval.low if interval and interval.n > 1 else None,
            "high": interval.high if interval and interval.n > 1 else None,
            "interval_text": interval.text() if interval else "no finished run yet",
            "mean_seconds": sum(times) / len(times) if times else None})
    pairs = []
    accuracy = {(r["strategy"], r["seed"]): r["accuracy"] for r in per_run
                if r["accuracy"] is not None}
    # Higher rungs first in each pair: "fine_tune beat feature_extraction by …".
    for lower, higher in itertools.combinations(strategies, 2):
        both = [k for k in seeds if (higher, k) in accuracy and (lower, k) in accuracy]
        if not both:
            continue
        a, b = [accuracy[higher, k] for k in both], [accuracy[lower, k] for k in both]
        comparison = paired_comparison(a, b)
        d = comparison.difference
        pairs.append({"a": higher, "b": lower, "seeds": both, "difference": d.mean,
                      "low": d.low if d.n > 1 else None, "high": d.high if d.n > 1 else None,
                      "p_value": comparison.p_value, "significant": comparison.significant(),
                      "text": comparison_text(higher, lower, comparison)})
    done = sum(r["accuracy"] is not None for r in per_run)
    return {"strategies": table, "pairs": pairs, "runs_scored": done, "runs_total": len(per_run),
            "complete": done == len(per_run) and len(per_run) > 0}


def table_text(results: dict) -> str:
    """The results as plain text for the CLI."""
    lines = [(f"study {results.get('name', '')}: {results['runs_scored']} of "
              f"{results['runs_total']} runs scored on the test split")]
    for row in results["strategies"]:
        seeds = ", ".join(f"seed {r['seed']} {_percent(r['accuracy'])}"
                          + ("" if r["state"] == "finished" else f" ({r['state']})")
                          for r in row["runs"])
        seconds = row["mean_seconds"]
        lines.append(f"  {row['strategy']}: {row['interval_text']}; mean wall time "
                     f"{'–' if seconds is None else f'{seconds:.0f} s'}\n    {seeds}")
    lines += [f"  {pair['text']}" for pair in results["pairs"]]
    return "\n".join(lines)


def list_studies(workspace: str | Path) -> list[Study]:
    """Every study in the workspace, newest first; a damaged one is listed too."""
    folder = studies_dir(workspace)
    found = [Study(p) for p in folder.iterdir() if (p / STUDY_FILE).exists()]
    return sorted(found, key=_modified, reverse=True)


def find_study(workspace: str | Path, name: str) -> Study | None:
    study = Study(studies_dir(workspace) / name)
    return study if study.path.exists() else None


def _modified(study: Study) -> float:
    try:
        return study.path.stat().st_mtime
    except OSError:
        return 0.0


def _wall_seconds(status: dict) -> float | None:
    started, finished = status.get("started"), status.get("finished")
    if isinstance(started, (int, float)) and isinstance(finished, (int, float)):
        return max(0.0, finished - started)
    return None


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _check_document(data: dict, path: Path) -> None:
    """study.json as `create` writes it: a damaged or hand-edited file raises DamagedFile."""
    if not isinstance(data.get("settings"), dict):
        raise DamagedFile(path, "no settings")
    for key in ("strategies", "seeds", "runs"):
        if not isinstance(data.get(key), list):
            raise DamagedFile(path, f"{key} is not a list")
    if any(s not in STRATEGIES for s in data["strategies"]):
        raise DamagedFile(path, f"unknown strategy in {data['strategies']}")
    if any(isinstance(k, bool) or not isinstance(k, int) for k in data["seeds"]):
        raise DamagedFile(path, f"seeds are not whole numbers: {data['seeds']}")
    for item in data["runs"]:
        if not (isinstance(item, dict) and item.get("strategy") in data["strategies"]
                and item.get("seed") in data["seeds"]
                and (item.get("run") is None or isinstance(item.get("run"), str))):
            raise DamagedFile(path, f"a run entry is not strategy, seed and run: {item!r}")
        if item["run"] and ("/" in item["run"] or item["run"].startswith(".")):
            raise DamagedFile(path, f"run name {item['run']!r} is not a folder name")
    try:
        TrainConfig.from_dict(data["settings"])
    except TransferLabError as exc:
        raise DamagedFile(path, f"settings: {exc}") from None


def estimate_study_seconds(per_strategy: dict, strategies, seeds: int, n_test: int,
                           images_per_second: float) -> float:
    """The whole study: each strategy's estimated run time (estimates.estimate_seconds) once
    per seed, plus one pass over the test split per run for its accuracy."""
    runs = len(list(strategies)) * seeds
    return seeds * sum(per_strategy[s] for s in strategies) + runs * n_test / images_per_second


def results_figure(results: dict):
    """Test accuracy against mean wall time, one point per strategy: the mean with its 95% t
    interval as an error bar, and each seed's accuracy as a small dot beside it."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for row in results["strategies"]:
        scored = [r for r in row["runs"] if r["accuracy"] is not None]
        if not scored:
            continue
        x = (row["mean_seconds"] or 0) / 60
        label = row["strategy"].replace("_", " ")
        interval = row["low"] is not None
        figure.add_trace(go.Scatter(
            x=[x], y=[100 * row["mean"]], mode="markers+text", name=label, text=[label],
            textposition="middle right", marker={"size": 12}, legendgroup=label,
            error_y={"type": "data", "symmetric": False, "visible": interval,
                     "array": [100 * (row["high"] - row["mean"])] if interval else [0],
                     "arrayminus": [100 * (row["mean"] - row["low"])] if interval else [0]},
            hovertemplate=f"{label}<br>mean %{{y:.2f}}%<br>{row['interval_text']}"
                          "<br>mean wall time %{x:.1f} min<extra></extra>"))
        figure.add_trace(go.Scatter(
            x=[x] * len(scored), y=[100 * r["accuracy"] for r in scored], mode="markers",
            marker={"size": 6, "opacity": 0.5, "color": "black"}, showlegend=False,
            legendgroup=label, text=[f"seed {r['seed']}" for r in scored],
            hovertemplate="%{text}: %{y:.2f}%<extra></extra>"))
    figure.update_layout(xaxis_title="mean wall time per run (minutes)",
                         yaxis_title="test accuracy (%)", height=420,
                         margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return figure
