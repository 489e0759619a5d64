"""Step 2: choose a backbone and a freezing strategy, start a run, watch it learn."""

from dataclasses import dataclass

import streamlit as st

from app_pages import _ui as ui
from transfer_core import jobs
from transfer_core.backbones import BACKBONES, imagenet_weights_path, size_advice
from transfer_core.balance import CLASS_WEIGHTS, imbalance
from transfer_core.curves import curves_figure
from transfer_core.errors import TransferLabError
from transfer_core.estimates import estimate_seconds, human_duration
from transfer_core.bank import automatic_views, bank_boundary, bank_growth
from transfer_core.features import FeatureCache, room_for_features, view_bank_bytes
from transfer_core.precision import PRECISIONS, cpu_has_bf16
from transfer_core.recommend import PATIENCE, SETTINGS, default_settings
from transfer_core.runs import MONITORS, STRATEGIES, Run, TrainConfig
from transfer_core.storage import human_size
from transfer_core.strategies import STRATEGY_HELP, name_below

st.title("Train")
st.caption("Step 2 of 5 · reuse a pretrained convnet: pick its conv base and how much of it "
           "stays frozen, then train a classifier on top.")


@st.cache_data(show_spinner=False)
def backbone_facts(name: str, size: int) -> dict:
    from transfer_core.backbones import describe

    return describe(name, size)


@st.cache_data(show_spinner=False)
def throughput(name: str, size: int) -> dict:
    from transfer_core.estimates import remembered_throughput

    return remembered_throughput(ui.workspace(), name, size)


@st.cache_data(show_spinner=False)
def share_above(name: str, size: int, boundary: str) -> float:
    from transfer_core.estimates import top_share

    return top_share(name, size, boundary)


def form_defaults() -> dict:
    """Where the form starts: a new session (a reload, a second browser) shows the current
    run's settings, so Start repeats what is shown below; with no run, the chapter's."""
    if "form_defaults" not in st.session_state:
        run = ui.current_run()
        usable = run is not None and not run.problem()  # a damaged run has no settings to show
        st.session_state["form_defaults"] = run.config.to_dict() if usable else {}
    return st.session_state["form_defaults"]


def setting(last: dict, name: str):
    """The last run's value of a setting, else TrainConfig's default (the one source)."""
    return last.get(name, getattr(TrainConfig, name))


def settings_form(manifest) -> TrainConfig | None:
    last = form_defaults()
    counts = manifest.counts()
    n_train, n_val = sum(counts["train"].values()), sum(counts["validation"].values())
    left, right = st.columns(2)
    with left:
        name = st.selectbox("Backbone", list(BACKBONES), key="backbone",
                            index=list(BACKBONES).index(setting(last, "backbone")),
                            format_func=lambda n: BACKBONES[n].label,
                            help="The pretrained conv base (keras.applications). VGG16 is the "
                                 "chapter's; MobileNetV2 is far cheaper on a CPU (its speed "
                                 "here shows beside it).")
        backbone = BACKBONES[name]
        same = last.get("backbone") == name  # the last run's size and boundary fit this base
        size = st.number_input("Image size (pixels)", 32, 512,
                               last["image_size"] if same else backbone.default_size, step=16,
                               key=f"size_{name}", help="Every photo is resized to this square.")
        trained_at, too_far = size_advice(name, int(size))
        st.caption(trained_at)
        if too_far:
            st.warning(too_far, icon=":material/photo_size_select_large:")
        weights = st.radio("Weights", ["imagenet", "none"], horizontal=True, key="weights",
                           index=int(setting(last, "weights") == "none"),
                           format_func={"imagenet": "ImageNet (pretrained)",
                                        "none": "none (random: for testing only)"}.get)
        if weights == "imagenet":
            target = imagenet_weights_path(backbone, size)
            st.caption("ImageNet weights: " + ("in the local Keras cache." if target.exists()
                       else f"downloaded by Keras on first use into {target.parent}."))
    with right:
        with st.spinner(f"Measuring {backbone.label} on this machine…"):
            facts, speed = backbone_facts(name, size), throughput(name, size)
        st.markdown(f"**{backbone.label}** — {backbone.summary}")
        st.caption(f"{facts['parameters'] / 1e6:.1f} M parameters · "
                   f"{facts['flops_per_image'] / 1e9:.2f} GFLOPs per image · features "
                   f"{' × '.join(map(str, facts['feature_shape']))} · "
                   f"{speed['images_per_second']:.1f} images/s here")
        if speed.get("not_saved"):  # measured, not remembered: the page carries on
            st.warning(f"The measurement is not remembered: {speed['not_saved']}.",
                       icon=":material/warning:")

    strategy = st.radio("Strategy", STRATEGIES, key="strategy", horizontal=True,
                        index=STRATEGIES.index(setting(last, "strategy")),
                        format_func=lambda s: s.replace("_", " "))
    st.info(STRATEGY_HELP[strategy], icon=":material/school:")
    chosen_settings = settings_input(manifest, last)
    recommended = chosen_settings == "recommended"

    c1, c2, c3, c4 = st.columns(4)
    # Recommended: these two are measured when the run starts; the inputs show the chapter's.
    epochs = c1.number_input("Epochs" if strategy != "fine_tune" else "Epochs (classifier)",
                             1, 500, setting(last, "epochs"), key="epochs",
                             disabled=recommended)
    learning_rate = c2.number_input("Learning rate", 1e-7, 1.0, setting(last, "learning_rate"),
                                    step=1e-5, format="%.1e", disabled=recommended,
                                    key="learning_rate",
                                    help="The chapter: 2e-5 (RMSprop); 1e-4 from scratch (5.2).")
    batch_size = c3.number_input("Batch size", 1, 512, setting(last, "batch_size"),
                                 key="batch_size")
    seed = c4.number_input("Seed", 0, 2**31 - 1, setting(last, "seed"), key="seed")
    fine_tune_epochs = TrainConfig.fine_tune_epochs
    fine_tune_lr, boundary = TrainConfig.fine_tune_learning_rate, backbone.fine_tune_from
    if strategy == "fine_tune":
        c1, c2, c3 = st.columns(3)
        fine_tune_epochs = c1.number_input("Epochs (fine-tuning)", 1, 500,
                                           setting(last, "fine_tune_epochs"), key="ft_epochs")
        fine_tune_lr = c2.number_input("Fine-tuning learning rate", 1e-8, 1.0,
                                       setting(last, "fine_tune_learning_rate"), step=1e-6,
                                       format="%.1e", key="ft_lr",
                                       help="The chapter: 1e-5, lower than the first phase's.")
        layers = facts["layers"][1:]
        boundary = c3.selectbox("Unfreeze from layer", layers, key=f"boundary_{name}",
                                index=layers.index(last["fine_tune_from"] if same
                                                   else backbone.fine_tune_from),
                                help="This layer and every layer above it train in phase 2.")
    fine_tune_on_bank = False
    if strategy == "fine_tune":
        fine_tune_on_bank = st.checkbox(
            "Fine-tune on the stored views too", setting(last, "fine_tune_on_bank"),
            key="fine_tune_on_bank",
            help="Off: the classifier trains on the view bank below, then fine-tuning runs "
                 "the base on new augmented photos every epoch, as the chapter does. On: the "
                 "unfrozen block trains on the bank's stored views as well, about twice as "
                 "fast, but it learns them by heart: on MobileNetV2 (3 seeds) it ended 0.3 "
                 "points below fine-tuning on the fly (docs/LADDER.md).")
    views, view_bank = 0, setting({}, "view_bank")
    if strategy in ("feature_extraction_augmented", "fine_tune"):  # a frozen part to bank
        augmented_before = setting(last, "strategy") in ("feature_extraction_augmented",
                                                          "fine_tune")
        bank = BankPlan(facts, strategy, boundary, n_train, n_val, int(epochs),
                        int(fine_tune_epochs), fine_tune_on_bank)
        view_bank, views = view_bank_input(bank, setting(last if augmented_before else {},
                                                         "view_bank"))
    with st.expander("More settings"):
        a1, a2, a3, a4 = st.columns(4)
        pooling = a1.selectbox("Head input", ["flatten", "avg"], key="pooling",
                               disabled=recommended,
                               index=int(setting(last, "pooling") == "avg"),
                               format_func={"flatten": "Flatten (the chapter)",
                                            "avg": "Global average pooling (smaller, faster)"}.get)
        preprocessing = a2.selectbox("Preprocessing", ["backbone", "rescale"], key="preprocessing",
                                     index=int(setting(last, "preprocessing") == "rescale"),
                                     format_func={"backbone": "the backbone's own",
                                                  "rescale": "1/255 (the chapter's)"}.get)
        monitor = a3.selectbox("Keep the model of", MONITORS, key="monitor",
                               index=MONITORS.index(setting(last, "monitor")),
                               format_func=MONITOR_LABELS.get,
                               help="Which epoch's model the run keeps: the best by a "
                                    "validation score, or the last, as the chapter does (its "
                                    "validation loss stops improving while the accuracy still "
                                    "rises). The last epoch allows no early stopping.")
        patience = a4.number_input("Early stopping patience (0 = off)", 0, 100,
                                   setting(last, "early_stopping_patience") or 0,
                                   key="patience", disabled=monitor == "last",
                                   help="Stops when the kept score has not improved for this "
                                        "many epochs: choose a validation score to keep by "
                                        "first (the last epoch has nothing to wait for).")
        patience = 0 if monitor == "last" else patience
        class_weight = class_weight_input(counts["train"], setting(last, "class_weight"))
        run_precision = precision_input(setting(last, "precision"))

    estimate = estimate_seconds(speed, n_train, n_val, epochs, fine_tune_epochs,
                                TrainConfig.dense_units, pooling,
                                share_above(name, size, boundary), views, fine_tune_on_bank)
    st.caption("Estimated time on this machine: " + " · ".join(
        f"{s.replace('_', ' ')} {human_duration(v)}" for s, v in estimate.items()))
    try:
        return TrainConfig(
            manifest=str(manifest.path), backbone=name, weights=weights, strategy=strategy,
            epochs=int(epochs), fine_tune_epochs=int(fine_tune_epochs),
            learning_rate=float(learning_rate), fine_tune_learning_rate=float(fine_tune_lr),
            batch_size=int(batch_size), image_size=int(size), fine_tune_from=boundary,
            preprocessing=preprocessing, pooling=pooling, monitor=monitor,
            early_stopping_patience=int(patience) or None, seed=int(seed), view_bank=view_bank,
            fine_tune_on_bank=fine_tune_on_bank,
            classes=manifest.classes, class_weight=class_weight, precision=run_precision,
            settings=chosen_settings)
    except TransferLabError as exc:
        ui.show_error(exc)
        return None


def settings_input(manifest, last: dict) -> str:
    """The chapter's settings or ones measured on this dataset, with which is in use and why."""
    default, why = default_settings(manifest)
    if last.get("manifest") == manifest.path and last.get("settings") in SETTINGS:
        default, why = last["settings"], "the current run used them"
    choice = st.radio("Settings", SETTINGS[::-1], horizontal=True, key="settings",
                      index=SETTINGS[::-1].index(default),
                      format_func={"chapter": "The chapter's settings",
                                   "recommended": "Recommended for this dataset"}.get)
    reason = why if choice == default else "chosen here"
    if choice == "recommended":
        st.caption(f"In use: recommended ({reason}). When the run starts, it measures on the "
                   "training and validation splits only: the head (linear on standardized "
                   "average pooling, weight decay chosen as a logistic regression's, or the "
                   "chapter's Dense 256 on average pooling or flatten; the linear head unless "
                   "another is more accurate on validation beyond chance, by McNemar's test), "
                   "the learning rate (a "
                   "range test: a tenth of the rate with the lowest loss) and the epochs "
                   f"(early stopping, patience {PATIENCE}). The Curves page shows what it "
                   "tried. Epochs, learning rate and head input below are replaced.")
    else:
        st.caption(f"In use: the chapter's settings ({reason}): Flatten → Dense 256, RMSprop "
                   "at 2e-5, 30 epochs, batch 20, tuned for VGG16 on 4,000 photos.")
    return choice


def precision_input(default: str) -> str:
    """The conv base's arithmetic; "auto" says whether this CPU could use bfloat16 at all."""
    native = "has" if cpu_has_bf16() else "has no"
    return st.radio("Precision of the conv base", PRECISIONS, horizontal=True, key="precision",
                    index=PRECISIONS.index(default if default in PRECISIONS else "auto"),
                    help=f"This CPU {native} native bfloat16 (avx512_bf16 or amx_bf16). Auto "
                         "measures both once and takes bfloat16 only when it is faster and "
                         "labels a check set of your training photos the same as float32; the "
                         "classifier always trains in float32. docs/BENCHMARKS.md (bfloat16).")




def class_weight_input(train_counts: dict, default: str) -> str:
    """Class weights, with the training split's imbalance said beside them."""
    uneven = imbalance(train_counts)
    choice = st.radio("Class weights", CLASS_WEIGHTS, horizontal=True, key="class_weight",
                      index=CLASS_WEIGHTS.index(default if default in CLASS_WEIGHTS else "none"),
                      format_func={"none": "none (every photo counts the same)",
                                   "balanced": "balanced (each class counts the same)"}.get,
                      help="Balanced weighs each class's photos in the loss by the inverse of "
                           "its share of the training split, so a large class cannot win by "
                           "numbers alone.")
    if uneven:
        st.caption(f":material/balance: The training split is imbalanced: "
                   f"{uneven['largest']} {uneven['largest_count']}, {uneven['smallest']} "
                   f"{uneven['smallest_count']} ({uneven['ratio']:.1f}×).")
    return choice


MONITOR_LABELS = {"val_loss": "the best epoch by validation loss",
                  "val_accuracy": "the best epoch by validation accuracy",
                  "last": "the last epoch (the chapter's way)"}


@dataclass
class BankPlan:
    """What the view bank's size and disk use depend on: the base, the boundary, the split."""

    facts: dict
    strategy: str
    boundary: str
    n_train: int
    n_val: int
    epochs: int
    fine_tune_epochs: int
    fine_tune_on_bank: bool = False

    def cut(self) -> str | None:
        """The top of the frozen part the bank is taken at (None: the base's output)."""
        boundary = bank_boundary(self.strategy, self.boundary, self.fine_tune_on_bank)
        return name_below(self.facts["layers"], boundary) if boundary else None

    def parts(self, views: int, cut: str | None) -> dict[str, int]:
        return view_bank_bytes(self.facts["layer_shapes"], cut, self.facts["layers"][-1], views,
                               self.n_train, self.n_val)

    def automatic(self, cut: str | None) -> tuple[int, str]:
        """The views "auto" takes with the disk the feature cache has now (bank.py)."""
        per_view, fixed = bank_growth(self.facts["layer_shapes"], cut, self.facts["layers"][-1],
                                      self.n_train, self.n_val)
        room = room_for_features(FeatureCache(ui.workspace()).root) - fixed
        return automatic_views(self.strategy, self.epochs, self.fine_tune_epochs, per_view, room,
                               self.fine_tune_on_bank)


def view_bank_input(bank: BankPlan, default) -> tuple[int | str, int]:
    """The view bank, automatic or a number of augmented views of each photo to compute once;
    returns the setting and the views it gives, with its disk use said below."""
    mode = st.radio(
        "Augmented views per photo", ["auto", "number"], horizontal=True, key="view_bank_mode",
        index=int(default != "auto"),
        format_func={"auto": "Automatic", "number": "A number"}.get,
        help="The frozen layers never change, so running every augmented photo through them "
             "on every epoch repeats the same arithmetic. With K views, each photo is "
             "augmented K times and pushed once through the frozen part; every epoch then "
             "trains only the rest on one of those views. Automatic takes one view per three "
             "epochs (3 to 30), fewer when the disk is short; a few views read for many epochs "
             "are learnt by heart. 0 augments on the fly, the chapter's way. "
             "docs/BENCHMARKS.md (\"The view bank\") compares them on the chapter's photos.")
    views = 0 if mode == "auto" else int(st.number_input(
        "Views (0 = augment on the fly)", 0, 100, default if isinstance(default, int) else 3,
        key="view_bank"))
    setting_value = "auto" if mode == "auto" else views
    try:
        cut = bank.cut()
    except TransferLabError as exc:  # a boundary at the very bottom leaves nothing to cache
        ui.show_error(exc)
        return setting_value, views
    if mode == "auto":
        views, reason = bank.automatic(cut)
        st.caption(f"Automatic: {views} views ({reason.removeprefix('automatic: ')}).")
    if views:
        parts = bank.parts(views, cut)
        where = f"`{cut}`, the top of the frozen part," if cut else "the base's output"
        head = (f", and {human_size(parts['head phase'])} for the same at the base's output, "
                "which the first phase trains on" if cut else "")
        st.caption(f"The frozen part runs {views}× per photo instead of once per epoch. "
                   f"The bank takes {human_size(sum(parts.values()))} of disk in the feature "
                   f"cache (views in float16): {views} × {bank.n_train} training views and "
                   f"{bank.n_val} validation photos at {where}{head}.")
    return setting_value, views


def show_run(run: Run):
    status = run.status()
    state = status.get("state")
    # Which model the run keeps: the best by its monitor, or the last epoch's.
    which = "last" if state != "damaged" and run.config.monitor == "last" else "best"
    st.subheader(f"Run {run.name}")
    if state == "queued" and jobs.active_run(ui.workspace()) is None:
        st.info("Starting: the training process is loading TensorFlow and the backbone…",
                icon=":material/hourglass_top:")
    elif state == "queued":
        position = jobs.queue_position(run, ui.workspace())
        st.info(f"Waiting in line{f': number {position}' if position else ''}. One run trains "
                "at a time on this machine; this one starts when the current one ends.",
                icon=":material/hourglass_top:")
    elif state == "running":
        progress = status.get("progress") or {}
        done, total = progress.get("done", 0), progress.get("total") or 1
        eta = progress.get("eta_seconds")
        stage = status.get("stage", "training")
        text = stage  # no count yet: "starting", not "starting · 0.0 of 1"
        if progress.get("total"):  # the core says what it counts: epochs or images
            text += (f" · {done} of {total} images" if progress.get("unit") == "images"
                     else f" · {done:.1f} of {total}")
        if eta:
            text += f" · about {human_duration(eta)} left" + (
                " in this phase" if progress.get("eta_scope") == "phase" else "")
        st.progress(min(done / total, 1.0), text=text)
    elif state == "finished":
        st.success(f"Finished. The {which} epoch's model is saved.",
                   icon=":material/check_circle:")
    elif state == "stopped":
        st.warning(f"Stopped. The {which} model so far is kept.", icon=":material/stop_circle:")
    elif state == "interrupted":
        st.warning(f"Interrupted: {status.get('error')}", icon=":material/warning:")
    elif state == "failed":
        st.error(f"Failed: {status.get('error')}", icon=":material/error:")
    elif state == "damaged":
        st.error(f"This run is {status.get('error')}. The other runs are not affected.",
                 icon=":material/broken_image:")
        return
    kept = run.kept_epoch_if_cut_short(state)
    if kept:
        st.caption(f"The model kept is epoch {kept['global_epoch']}'s (validation accuracy "
                   f"{100 * (kept.get('val_accuracy') or 0):.1f}%), the {which} that was "
                   "saved.")
    for warning in run.warnings():
        st.caption(f":material/warning: {warning}")
    if state in ("queued", "running"):
        if st.button("Stop", icon=":material/stop:", key=f"stop_{run.name}"):
            jobs.stop(run)
            st.toast("Asked the run to stop; it ends within one batch.")
    records = run.epochs()
    if records:
        left, right = st.columns(2)
        monitor = run.config.monitor  # the star marks the epoch this run keeps
        left.plotly_chart(curves_figure({run.name: records}, "accuracy", monitor=monitor),
                          key="live_acc")
        right.plotly_chart(curves_figure({run.name: records}, "loss", monitor=monitor),
                           key="live_loss")
    if run.has_usable_model():
        tested = ui.test_accuracy_text(run)
        if tested:
            st.caption(f":material/fact_check: On the test split: {tested}.")
        c1, c2, c3 = st.columns(3)
        c1.page_link(ui.PAGES["curves"], label="See the curves", icon=":material/show_chart:")
        c2.page_link(ui.PAGES["evaluate"], label="Evaluate on the test set",
                     icon=":material/fact_check:")
        c3.page_link(ui.PAGES["predict"], label="Predict on your photos",
                     icon=":material/image_search:")


def feature_cache_section():
    """The disk the feature cache takes, and a button that frees it."""
    with st.expander("Feature cache"):
        if "cache_cleared" in st.session_state:
            st.success(st.session_state.pop("cache_cleared"), icon=":material/delete:")
        if "cache_not_cleared" in st.session_state:
            ui.show_error(st.session_state.pop("cache_not_cleared"))
        size = FeatureCache(ui.workspace()).size_bytes()
        st.caption(f"Conv-base features and view banks cached by earlier runs take "
                   f"{human_size(size)} of disk. A run computes again what it needs.")
        st.button("Clear the feature cache", icon=":material/delete:", key="clear_cache",
                  disabled=not size, on_click=clear_feature_cache)


def clear_feature_cache():
    # A callback: it runs before the page, so the size shown afterwards is the new one.
    try:
        freed = jobs.clear_feature_cache(ui.workspace())
    except TransferLabError as exc:  # a run is training
        st.session_state["cache_not_cleared"] = exc
    else:
        st.session_state["cache_cleared"] = f"Freed {human_size(freed)}."


@st.fragment(run_every=2)
def live_run(name: str, page_state: str):
    """Re-reads the run folder every two seconds while the run is queued or running."""
    run = Run(ui.workspace() / "runs" / name)
    show_run(run)
    if run.status().get("state") != page_state:
        # The whole page: the sidebar shows the new state, and polling stops once it is over.
        st.rerun()


manifest = ui.current_manifest()
if manifest is None:
    ui.needs("There is no dataset yet: make a split first.", "dataset", "Go to Dataset")
    st.stop()
st.caption(f"Dataset: **{manifest.path and manifest.path.split('/')[-1]}** · "
           f"{len(manifest.classes)} classes: {', '.join(manifest.classes)}")

config = settings_form(manifest)
busy = jobs.active_run(ui.workspace())
if busy:
    st.caption(f"{busy.name} is training now; a new run waits in line until it ends.")
if config and st.button("Start training", type="primary", icon=":material/play_arrow:"):
    try:
        run = jobs.start(ui.workspace(), config)
    except TransferLabError as exc:  # e.g. no room on the disk for the run folder
        ui.show_error(exc)
    else:
        ui.set_current_run(run)
        st.rerun()  # the sidebar is drawn before this page: rerun so it shows the new run

feature_cache_section()
run = ui.current_run()
if run is not None:
    st.divider()
    state = run.status().get("state")
    if state in ("queued", "running"):
        live_run(run.name, state)
    else:
        show_run(run)
