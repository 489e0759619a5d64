"""Compare strategies over seeds: the chapter's ladder in one click, with its noise shown.

Thin: a study is made, queued, followed and summarized by transfer_core.studies; this page
asks for the plan and shows study.json's runs, so a reload or a second browser sees the same.
"""

import pandas as pd
import streamlit as st

from app_pages import _ui as ui
from transfer_core.backbones import BACKBONES
from transfer_core.bank import automatic_views
from transfer_core.errors import TransferLabError, system_error
from transfer_core.estimates import estimate_seconds, human_duration
from transfer_core.runs import STRATEGIES, TrainConfig
from transfer_core.strategies import STRATEGY_HELP
from transfer_core.studies import (
    Study,
    estimate_study_seconds,
    list_studies,
    results_figure,
    seeds_for,
)

NEW = "a new study"
WHY = ("Each strategy runs once per seed; seed k of every strategy shares the split, the test "
       "photos and the seed's random draws, so the strategies are compared **paired**, seed by "
       "seed: what a seed changes for both cancels in their difference. The intervals use "
       "**Student's t**, not the normal curve, because the spread is estimated from a handful "
       "of seeds (with 3 seeds the 95% interval is 4.3 standard errors wide each way, not 1.96).")

st.title("Compare")
st.caption("Train several strategies over several seeds as one study, then see whether one "
           "really beats another: every seed's test accuracy, the mean with its 95% interval, "
           "and a paired test for each pair.")


@st.cache_data(show_spinner=False)
def throughput(name: str, size: int) -> dict:
    from transfer_core.estimates import remembered_throughput

    return remembered_throughput(ui.workspace(), name, size)


@st.cache_data(show_spinner=False)
def share_above(name: str, size: int) -> float:
    from transfer_core.estimates import top_share

    return top_share(name, size)


def plan_form(manifest):
    """The study's plan and its estimated time; (base config, strategies, seeds) or None."""
    strategies = st.multiselect("Strategies", STRATEGIES, default=list(STRATEGIES),
                                key="compare_strategies",
                                format_func=lambda s: s.replace("_", " "))
    with st.expander("What each strategy does"):
        for strategy in strategies:
            st.markdown(f"**{strategy.replace('_', ' ')}**: {STRATEGY_HELP[strategy]}")
    c1, c2, c3, c4 = st.columns(4)
    names = list(BACKBONES)
    backbone = c1.selectbox("Backbone", names, index=names.index("mobilenet_v2"),
                            format_func=lambda n: BACKBONES[n].label, key="compare_backbone")
    weights = c2.radio("Weights", ["imagenet", "none"], horizontal=True, key="compare_weights")
    size = c3.number_input("Image size", 46, 512, BACKBONES[backbone].default_size, step=16,
                           key=f"compare_size_{backbone}")
    seeds = c4.number_input("Seeds", 1, 20, 3, key="compare_seeds",
                            help="3 or more: with fewer, no interval can say much.")
    c1, c2, c3, _ = st.columns(4)
    epochs = c1.number_input("Epochs", 1, 500, 30, key="compare_epochs",
                             help="Every strategy's (fine-tuning: the classifier phase).")
    fine_tune_epochs = c2.number_input("Fine-tuning epochs", 1, 500, 100, key="compare_ft",
                                       disabled="fine_tune" not in strategies)
    automatic = c3.toggle("Automatic view bank", True, key="compare_bank_auto",
                          help="As on the Train page: one augmented view per three epochs "
                               "(3 to 30); off, a number of views, 0 augmenting on the fly.")
    views = "auto" if automatic else int(c3.number_input(
        "View bank (augmented views)", 0, 100, 3, key="compare_views"))
    if not strategies:
        st.info("Pick at least one strategy.", icon=":material/info:")
        return None
    counts = {split: sum(c.values()) for split, c in manifest.counts().items()}
    with st.spinner(f"Measuring {BACKBONES[backbone].label} on this machine…"):
        speed = throughput(backbone, int(size))
        share = share_above(backbone, int(size)) if "fine_tune" in strategies else 0.1
    per_strategy = {strategy: estimate_seconds(
        speed, counts.get("train", 0), counts.get("validation", 0), int(epochs),
        int(fine_tune_epochs), top_share=share,
        views=views_of(strategy, views, int(epochs), int(fine_tune_epochs)))[strategy]
        for strategy in strategies}
    total = estimate_study_seconds(per_strategy, strategies, int(seeds), counts.get("test", 0),
                                   speed["images_per_second"])
    st.caption(f"Estimated time on this machine: **{human_duration(total)}** for "
               f"{len(strategies) * int(seeds)} runs (" + " · ".join(
                   f"{s.replace('_', ' ')} {human_duration(per_strategy[s])} a run"
                   for s in strategies) + "), plus testing each run. An estimate, not a promise.")
    try:
        base = TrainConfig(manifest=str(manifest.path), backbone=backbone, weights=weights,
                           strategy=strategies[0], epochs=int(epochs),
                           fine_tune_epochs=int(fine_tune_epochs), image_size=int(size),
                           view_bank=views, classes=manifest.classes)
    except TransferLabError as exc:
        ui.show_error(exc)
        return None
    return base, strategies, seeds_for(int(seeds))


def views_of(strategy: str, views: int | str, epochs: int, fine_tune_epochs: int) -> int:
    """The views a run of `strategy` will use: as set, or as "auto" picks them (disk aside)."""
    return views if views != "auto" else automatic_views(strategy, epochs, fine_tune_epochs)[0]


def show_progress(study: Study, progress: dict) -> None:
    done, total = progress["ended"], progress["total"]
    current = progress["current"]
    text = f"{done} of {total} runs done"
    if current:
        share = current.get("progress") or {}
        text += (f" · now {current['strategy'].replace('_', ' ')}, seed {current['seed']}: "
                 f"{current['stage'] or 'starting'}")
        if share.get("eta_seconds"):
            scope = "phase" if share.get("eta_scope") == "phase" else "run"
            text += f" (about {human_duration(share['eta_seconds'])} left in this {scope})"
    st.progress(done / total if total else 0.0, text=text)
    if progress["waiting"] and st.button("Stop the study", icon=":material/stop:"):
        study.stop()
        st.toast("Asked the study's runs to stop; what finished is kept.")


@st.fragment(run_every=2)
def live_progress(folder: str) -> None:
    """Re-reads study.json and its runs every two seconds until no run is waiting."""
    study = Study(folder)
    progress = study.progress()
    show_progress(study, progress)
    if not progress["waiting"]:
        st.rerun()  # the whole page: now the results


def show_results(study: Study) -> None:
    with st.spinner("Testing each finished run on the test split (once; then it is kept)…"):
        try:
            results = study.results()
        except (TransferLabError, OSError) as exc:
            ui.show_error(system_error(exc) if isinstance(exc, OSError) else exc)
            return
    if not results["runs_scored"]:
        st.info("No run of this study has finished yet.", icon=":material/info:")
        return
    if not results["complete"]:
        st.warning(f"Partial: {results['runs_scored']} of {results['runs_total']} runs have a "
                   "test accuracy (the others stopped, failed or were removed). "
                   "Resume queues them again.", icon=":material/warning:")
    st.dataframe(pd.DataFrame([{
        "strategy": row["strategy"].replace("_", " "),
        "test accuracy per seed": ", ".join(
            f"{r['seed']}: " + ("–" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%")
            for r in row["runs"]),
        "mean (95% t interval)": row["interval_text"],
        "mean wall time": "–" if row["mean_seconds"] is None
        else human_duration(row["mean_seconds"]),
    } for row in results["strategies"]]), hide_index=True, width="stretch")
    st.plotly_chart(results_figure(results), key="study_figure")
    for pair in results["pairs"]:
        st.markdown(f"- {pair['text']}")
    st.caption(WHY)


manifest = ui.current_manifest()
if manifest is None:
    ui.needs("There is no dataset yet: make a split first.", "dataset", "Go to Dataset")
    st.stop()

studies = list_studies(ui.workspace())
names = [NEW] + [s.name for s in studies]
chosen = st.session_state.get("study_name")
name = st.selectbox("Study", names, key="study_pick",
                    index=names.index(chosen) if chosen in names else min(1, len(names) - 1))
if name == NEW:
    st.caption(f"On the current dataset: **{manifest.path and manifest.path.split('/')[-1]}**")
    plan = plan_form(manifest)
    if plan and st.button("Start the study", type="primary", icon=":material/play_arrow:"):
        try:
            study = Study.create(ui.workspace(), *plan)
            study.start()
        except (TransferLabError, OSError) as exc:
            ui.show_error(system_error(exc) if isinstance(exc, OSError) else exc)
        else:
            st.session_state["study_name"] = study.name
            st.rerun()
    st.stop()

study = next(s for s in studies if s.name == name)
st.session_state["study_name"] = name
problem = study.problem()
if problem:
    st.error(f"{problem}. The other studies and every run are not affected.",
             icon=":material/broken_image:")
    st.stop()
settings = study.read()["settings"]
st.caption(f"{BACKBONES[settings['backbone']].label} at {settings['image_size']} px, "
           f"{settings['epochs']} epochs"
           + (f" (+ {settings['fine_tune_epochs']} fine-tuning)"
              if "fine_tune" in study.read()["strategies"] else "")
           + f", view bank {settings['view_bank']}, weights {settings['weights']}")
progress = study.progress()
if progress["waiting"]:
    live_progress(str(study.folder))
    st.caption("Results appear when the runs end. Leaving the page does not stop them.")
else:
    show_progress(study, progress)
    if progress["finished"] < progress["total"] and st.button("Resume: queue what is missing"):
        study.start()
        st.rerun()
    show_results(study)
