"""Start, queue, watch and stop training processes.

A run trains in its own process (`python -m transfer_core worker RUN`), not in the caller's
thread, so it outlives a Streamlit rerun, a page switch or a closed tab. One run trains at a
time per workspace (a file lock); the others wait in line, in the order they were started.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import config as paths
from .errors import RunError
from .runs import Run, TrainConfig, list_runs
from .storage import StorageError, remove_stale_temps, write_failure

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def start(workspace: str | Path, config: TrainConfig, name: str | None = None) -> Run:
    """Create the run folder and launch its training process in the background."""
    workspace = Path(workspace)
    run = Run.create(workspace, config, name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    try:
        with open(run.log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "transfer_core", "worker", str(run.folder),
                 "--workspace", str(workspace)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=PROJECT_ROOT, start_new_session=True)
    except OSError as exc:  # no room for the log: the run ends before it began
        error = write_failure(exc, run.folder, "starting the training process")
        run.finish(state="failed", error=error, finished=time.time())
        raise StorageError(error) from None
    run.update_status(pid=process.pid)
    return run


def run_when_free(run: Run, workspace: str | Path, poll_seconds: float = 0.5) -> dict:
    """Wait for the workspace's training slot (or a stop request), then train."""
    from .training import train

    _stop_on_sigterm(run)
    remove_leftovers(workspace)
    try:
        run.update_status(state="queued", pid=os.getpid())
    except StorageError as exc:  # a full disk before the start: say so and end
        return run.finish(state="failed", error=str(exc), finished=time.time(), pid=None)
    with _training_slot(Path(workspace), run, poll_seconds) as acquired:
        if not acquired:
            return run.finish(state="stopped", finished=time.time(), pid=None,
                              stage="stopped before it started")
        return train(run, workspace)


def train_as_worker(config: TrainConfig, workspace: str | Path) -> dict:
    """Train as a worker of a multi-worker run other than the chief (Keras' multi-worker
    pattern): in step with the others, its features cached in `workspace`, but its run files
    in a scratch folder removed at the end, as the chief writes the run. It takes no training
    slot: the chief holds the run's, and a second slot would keep two workers of one machine
    waiting for each other."""
    from .training import train

    scratch = Path(tempfile.mkdtemp(prefix="transfer-lab-worker-"))
    try:
        return train(Run.create_in(scratch / "run", config), workspace)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_leftovers(workspace: str | Path) -> list[Path]:
    """Remove the temporary files and partial feature sets that killed processes left in the
    workspace (a writer's pid is in each name: a live writer's files are never touched).
    Called when a worker or the app starts; returns what was removed."""
    workspace = Path(workspace)
    folders = [paths.runs_dir(workspace), paths.cache_dir(workspace),
               paths.cache_dir(workspace) / "features", paths.manifests_dir(workspace)]
    folders += [run.folder for run in list_runs(workspace)]
    return [path for folder in folders for path in remove_stale_temps(folder)]


def _stop_on_sigterm(run: Run) -> None:
    """`kill PID` stops a run as the Stop button does: within a batch, best model kept."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: run.request_stop())


@contextlib.contextmanager
def _training_slot(workspace: Path, run: Run, poll_seconds: float):
    lock_path = paths.runs_dir(workspace) / ".training.lock"
    with open(lock_path, "a+") as handle:
        while True:
            if run.stop_requested():
                yield False
                return
            # First come, first served: only the head of the line tries for the slot.
            if queue_position(run, workspace) in (1, None):
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
            time.sleep(poll_seconds)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stop(run: Run) -> None:
    """Ask a run to stop: a running one ends within a batch, a queued one leaves the line."""
    run.request_stop()


def queue_position(run: Run, workspace: str | Path) -> int | None:
    """1 for the next run to start, 2 for the one after …; None when not waiting."""
    waiting = [r for r in list_runs(workspace) if r.status().get("state") == "queued"]
    waiting.sort(key=lambda r: r.status().get("created", 0))
    names = [r.name for r in waiting]
    return names.index(run.name) + 1 if run.name in names else None


def clear_feature_cache(workspace: str | Path) -> int:
    """Delete every cached feature set of the workspace; returns the bytes freed. Refused
    while a run trains: it may be reading or writing them."""
    from .features import FeatureCache

    busy = active_run(workspace)
    if busy is not None:
        raise RunError(f"{busy.name} is training and may be using the feature cache: clear it "
                       "when the run ends, or stop the run first.")
    return FeatureCache(workspace).clear()


def active_run(workspace: str | Path) -> Run | None:
    """The run training now, if any."""
    for run in list_runs(workspace):
        if run.status().get("state") == "running":
            return run
    return None
