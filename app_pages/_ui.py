"""What the pages share: the workspace, the current dataset and run, cached calls into
transfer_core, and the sidebar. Not a page (st.navigation lists the pages explicitly)."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from transfer_core import config, jobs
from transfer_core.datasets import list_manifests, load_manifest, scan
from transfer_core.errors import TransferLabError
from transfer_core.runs import Run, list_runs

PAGES = {
    "dataset": "app_pages/dataset.py",
    "train": "app_pages/train.py",
    "curves": "app_pages/curves.py",
    "evaluate": "app_pages/evaluate.py",
    "predict": "app_pages/predict.py",
    "compare": "app_pages/compare.py",
    "export": "app_pages/export.py",
}


def workspace() -> Path:
    return config.workspace_dir()


# ---- the current dataset (a saved manifest) ------------------------------------------------

def manifest_paths() -> list[Path]:
    return list_manifests(workspace())


def current_manifest_path() -> Path | None:
    """The manifest chosen in this session, else the newest saved one (a new tab picks up)."""
    chosen = st.session_state.get("manifest_path")
    if chosen and Path(chosen).exists():
        return Path(chosen)
    saved = manifest_paths()
    return saved[0] if saved else None


def set_current_manifest(path: Path) -> None:
    st.session_state["manifest_path"] = str(path)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_manifest(path: str, mtime: float):
    return load_manifest(path)


def current_manifest():
    path = current_manifest_path()
    return cached_manifest(str(path), path.stat().st_mtime) if path else None


# ---- runs ------------------------------------------------------------------------------------

def runs() -> list[Run]:
    return list_runs(workspace())


def current_run() -> Run | None:
    name = st.session_state.get("run_name")
    everything = runs()
    for run in everything:
        if run.name == name:
            return run
    return everything[0] if everything else None


def set_current_run(run: Run) -> None:
    st.session_state["run_name"] = run.name


def finished_runs() -> list[Run]:
    """The runs whose model Evaluate and Predict can use (Run.has_usable_model: ended, and
    model.keras whole; an interrupted run's kept model too). Damaged runs are not offered."""
    return [r for r in runs() if r.has_usable_model()]


def show_unusable_models() -> None:
    """Name each ended run that left a model.keras the pages cannot use, and why: a run left
    out of the pickers without a word would look lost."""
    for run in runs():
        if run.model_path.exists() and run.status().get("state") not in ("queued", "running"):
            problem = run.model_problem()
            if problem:
                st.warning(problem, icon=":material/warning:")


def pick_run(label: str, candidates: list[Run], key: str) -> Run | None:
    """A selectbox of runs, the current run first when it is a candidate."""
    if not candidates:
        return None
    current = current_run()
    names = [r.name for r in candidates]
    index = names.index(current.name) if current and current.name in names else 0
    name = st.selectbox(label, names, index=index, key=key,
                        format_func=lambda n: run_label(next(r for r in candidates if r.name == n)))
    run = next(r for r in candidates if r.name == name)
    set_current_run(run)
    return run


def test_accuracy_text(run: Run) -> str | None:
    """"97.4% (96.6–98.0, 95% Wilson interval over 2,000 test photos)" when the
    run's current model was evaluated; None otherwise (the Evaluate page makes one)."""
    from transfer_core.stats import accuracy_text

    result = run.evaluation()
    if not result or not result.get("images") or not run.model_path.exists():
        return None
    if result.get("model_mtime_ns") != run.model_path.stat().st_mtime_ns:
        return None  # evaluated an earlier model: not this one's score
    return accuracy_text(result["accuracy"], result["images"])


def run_label(run: Run) -> str:
    """A run as the pickers show it; a run that did not finish says which epoch's model it
    kept, a damaged one says what is damaged."""
    problem = run.problem()
    if problem:
        return f"{run.name} · {problem}"
    cfg, state = run.config, run.status().get("state", "?")
    label = f"{run.name} ({cfg.backbone}, {cfg.strategy.replace('_', ' ')}) · {state}"
    kept = run.kept_epoch()
    if kept and state != "finished":
        label += f" · model of epoch {kept['global_epoch']}"
    return label


# ---- cached work -----------------------------------------------------------------------------

def folder_signature(folder: str) -> tuple:
    """Cheap identity of a folder's contents: changes when files are added, removed or edited,
    and when a folder is renamed (a made dataset's class: its files keep their times)."""
    count, latest, folders = 0, 0.0, []
    for root, _dirs, files in os.walk(folder):
        folders.append(root)
        count += len(files)
        for name in files:  # lstat: a dangling or looping link is the scan's to report
            latest = max(latest, os.lstat(os.path.join(root, name)).st_mtime)
    return count, latest, hash(tuple(sorted(folders)))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_scan(folder: str, signature: tuple):
    # Links inside the chosen folder are resolved too: nothing outside the roots is read.
    return scan(folder, roots=config.allowed_roots(workspace()))


def scan_folder(folder: str):
    return cached_scan(folder, folder_signature(folder))


# ---- messages and navigation -----------------------------------------------------------------

def show_error(exc: Exception) -> None:
    """Our own errors are the user's to fix: show the message, not a traceback."""
    if isinstance(exc, TransferLabError):
        st.error(str(exc), icon=":material/error:")
    else:
        st.exception(exc)


def needs(what: str, page: str, label: str) -> None:
    """Say what is missing and link to the page that makes it."""
    st.info(what, icon=":material/info:")
    st.page_link(PAGES[page], label=label, icon=":material/arrow_forward:")


def sidebar_status() -> None:
    """The frame's sidebar: the current dataset and the current or last run."""
    remove_leftovers_once(str(workspace()))
    with st.sidebar:
        _sidebar_entry("Current dataset", current_manifest(), _show_manifest)
        current = current_run()
        _sidebar_entry("Current run", current, _show_run)
        _show_damaged([r for r in runs() if current is None or r.name != current.name])
        st.caption(f"Workspace: `{workspace()}`")


@st.cache_resource(show_spinner=False)
def remove_leftovers_once(folder: str) -> int:
    """At the app's start, the temporary files of killed writers go (once per workspace)."""
    return len(jobs.remove_leftovers(folder))


def _show_damaged(others: list[Run]) -> None:
    """Damaged runs are named on every page: they are not offered anywhere else."""
    for run in others:
        problem = run.problem()
        if problem:
            st.caption(f":material/broken_image: {run.name} · {problem}")


def _sidebar_entry(title: str, item, show) -> None:
    st.caption(title)
    if item is None:
        st.write("none yet")
    else:
        show(item)


def _show_manifest(manifest) -> None:
    counts = manifest.counts()
    st.write(f"**{Path(manifest.path).stem}**")
    sizes = {split: str(sum(c.values())) for split, c in counts.items()}
    if manifest.test_is_validation:  # evaluated on validation, as the user chose
        sizes["test"] = "= validation"
    st.caption(" · ".join(f"{split} {size}" for split, size in sizes.items())
               + f" · {len(manifest.classes)} classes")


def _show_run(run) -> None:
    status = run.status()
    state = status.get("state", "?")
    # Material icons ship with Streamlit; emoji need a colour-emoji font, which a fresh Linux
    # machine may lack (the icon then shows as an empty box).
    icon = {"running": ":material/directions_run:", "queued": ":material/hourglass_top:",
            "finished": ":material/check_circle:", "failed": ":material/error:",
            "stopped": ":material/stop_circle:", "interrupted": ":material/warning:",
            "damaged": ":material/broken_image:"}.get(state, "")
    st.write(f"**{run.name}**")
    if state == "damaged":
        st.caption(f"{icon} {status['error']}")
        return
    epoch = (f" · epoch {status.get('global_epoch')}/{status.get('total_epochs')}"
             if state == "running" and status.get("global_epoch") else "")
    kept = run.kept_epoch_if_cut_short(state)
    if kept:
        epoch = f" · model of epoch {kept['global_epoch']} kept"
    st.caption(f"{icon} {state}{epoch}")
    tested = test_accuracy_text(run)
    if tested:
        st.caption(f"On the test split: {tested}")
    for warning in run.warnings():
        st.caption(f":material/warning: {warning}")
