"""Step 2: choose a backbone and a freezing strategy, start a run, watch it learn."""

import streamlit as st

from app_pages import _ui as ui
from transfer_core import jobs
from transfer_core.backbones import BACKBONES, keras_home
from transfer_core.balance import CLASS_WEIGHTS, imbalance
from transfer_core.curves import curves_figure
from transfer_core.errors import TransferLabError
from transfer_core.estimates import estimate_seconds, human_duration
from transfer_core.features import view_bank_bytes
from transfer_core.runs import STRATEGIES, Run, TrainConfig
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


def settings_form(manifest) -> TrainConfig | None:
    last = form_defaults()
    counts = manifest.counts()
    n_train, n_val = sum(counts["train"].values()), sum(counts["validation"].values())
    left, right = st.columns(2)
    with left:
        name = st.selectbox("Backbone", list(BACKBONES), key="backbone",
                            index=list(BACKBONES).index(last.get("backbone", "vgg16")),
                            format_func=lambda n: BACKBONES[n].label,
                            help="The pretrained conv base (keras.applications). VGG16 is the "
                                 "chapter's; MobileNetV2 is about 40× cheaper on a CPU.")
        backbone = BACKBONES[name]
        same = last.get("backbone") == name  # the last run's size and boundary fit this base
        size = st.number_input("Image size (pixels)", 32, 512,
                               last["image_size"] if same else backbone.default_size, step=16,
                               key=f"size_{name}", help="Every photo is resized to this square.")
        weights = st.radio("Weights", ["imagenet", "none"], horizontal=True, key="weights",
                           index=int(last.get("weights") == "none"),
                           format_func={"imagenet": "ImageNet (pretrained)",
                                        "none": "none (random: for testing only)"}.get)
        if weights == "imagenet":
            cached = (keras_home() / "models" / backbone.weights_filename(size)).exists()
            st.caption("ImageNet weights: " + ("in the local Keras cache." if cached else
                       f"downloaded by Keras on first use into {keras_home() / 'models'}."))
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
                        index=STRATEGIES.index(last.get("strategy", "feature_extraction")),
                        format_func=lambda s: s.replace("_", " "))
    st.info(STRATEGY_HELP[strategy], icon=":material/school:")

    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs" if strategy != "fine_tune" else "Epochs (classifier)",
                             1, 500, last.get("epochs", 30), key="epochs")
    learning_rate = c2.number_input("Learning rate", 1e-7, 1.0, last.get("learning_rate", 2e-5),
                                    step=1e-5, format="%.1e",
                                    key="learning_rate",
                                    help="The chapter: 2e-5 (RMSprop); 1e-4 from scratch (5.2).")
    batch_size = c3.number_input("Batch size", 1, 512, last.get("batch_size", 20), key="batch_size")
    seed = c4.number_input("Seed", 0, 2**31 - 1, last.get("seed", 1337), key="seed")
    fine_tune_epochs, fine_tune_lr, boundary = 100, 1e-5, backbone.fine_tune_from
    if strategy == "fine_tune":
        c1, c2, c3 = st.columns(3)
        fine_tune_epochs = c1.number_input("Epochs (fine-tuning)", 1, 500,
                                           last.get("fine_tune_epochs", 100), key="ft_epochs")
        fine_tune_lr = c2.number_input("Fine-tuning learning rate", 1e-8, 1.0,
                                       last.get("fine_tune_learning_rate", 1e-5), step=1e-6,
                                       format="%.1e", key="ft_lr",
                                       help="The chapter: 1e-5, lower than the first phase's.")
        layers = facts["layers"][1:]
        boundary = c3.selectbox("Unfreeze from layer", layers, key=f"boundary_{name}",
                                index=layers.index(last["fine_tune_from"] if same
                                                   else backbone.fine_tune_from),
                                help="This layer and every layer above it train in phase 2.")
    views = 0
    if strategy in ("feature_extraction_augmented", "fine_tune"):  # a frozen part to bank
        augmented_before = last.get("strategy") in ("feature_extraction_augmented", "fine_tune")
        views = view_bank_input(facts, strategy, boundary, n_train, n_val,
                                last.get("view_bank", 3) if augmented_before else 3)
    with st.expander("More settings"):
        a1, a2, a3, a4 = st.columns(4)
        pooling = a1.selectbox("Head input", ["flatten", "avg"], key="pooling",
                               index=int(last.get("pooling") == "avg"),
                               format_func={"flatten": "Flatten (the chapter)",
                                            "avg": "Global average pooling (smaller, faster)"}.get)
        preprocessing = a2.selectbox("Preprocessing", ["backbone", "rescale"], key="preprocessing",
                                     index=int(last.get("preprocessing") == "rescale"),
                                     format_func={"backbone": "the backbone's own",
                                                  "rescale": "1/255 (the chapter's)"}.get)
        monitor = a3.selectbox("Keep the model of the best", ["val_loss", "val_accuracy"],
                               index=int(last.get("monitor") == "val_accuracy"), key="monitor")
        patience = a4.number_input("Early stopping patience (0 = off)", 0, 100,
                                   last.get("early_stopping_patience") or 0, key="patience")
        class_weight = class_weight_input(counts["train"], last.get("class_weight", "none"))

    estimate = estimate_seconds(speed, n_train, n_val, epochs, fine_tune_epochs, 256, pooling,
                                share_above(name, size, boundary), views)
    st.caption("Estimated time on this machine: " + " · ".join(
        f"{s.replace('_', ' ')} {human_duration(v)}" for s, v in estimate.items()))
    try:
        return TrainConfig(
            manifest=str(manifest.path), backbone=name, weights=weights, strategy=strategy,
            epochs=int(epochs), fine_tune_epochs=int(fine_tune_epochs),
            learning_rate=float(learning_rate), fine_tune_learning_rate=float(fine_tune_lr),
            batch_size=int(batch_size), image_size=int(size), fine_tune_from=boundary,
            preprocessing=preprocessing, pooling=pooling, monitor=monitor,
            early_stopping_patience=int(patience) or None, seed=int(seed), view_bank=int(views),
            classes=manifest.classes, class_weight=class_weight)
    except TransferLabError as exc:
        ui.show_error(exc)
        return None


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


def view_bank_input(facts: dict, strategy: str, boundary: str, n_train: int, n_val: int,
                    default: int) -> int:
    """The view bank: how many augmented views of each photo to compute once."""
    views = st.number_input(
        "Augmented views per photo (0 = augment on the fly)", 0, 50, default, key="view_bank",
        help="The frozen layers never change, so running every augmented photo through them "
             "on every epoch repeats the same arithmetic. With K views, each photo is "
             "augmented K times and pushed once through the frozen part; every epoch then "
             "trains only the rest on one of those views. 0 is the chapter's way. "
             "With 3, on the chapter's 4,000 training photos (MobileNetV2, a 2-core CPU), "
             "30 epochs took 9 minutes against about an hour on the fly, with the same "
             "test accuracy at 3 epochs over three seeds (docs/BENCHMARKS.md).")
    if views:
        layers = facts["layers"]
        try:
            cut = name_below(layers, boundary) if strategy == "fine_tune" else None
        except TransferLabError as exc:  # a boundary at the very bottom leaves nothing to cache
            ui.show_error(exc)
            return int(views)
        parts = view_bank_bytes(facts["layer_shapes"], cut, layers[-1], views, n_train, n_val)
        where = f"`{cut}`, the top of the frozen part," if cut else "the base's output"
        head = (f", and {human_size(parts['head phase'])} for the same at the base's output, "
                "which the first phase trains on" if cut else "")
        st.caption(f"The frozen part runs {views}× per photo instead of once per epoch. "
                   f"The bank takes {human_size(sum(parts.values()))} of disk in the feature "
                   f"cache: {views} × {n_train} training views and {n_val} validation photos at "
                   f"{where}{head}.")
    return int(views)


def show_run(run: Run):
    status = run.status()
    state = status.get("state")
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
        text = f"{stage} · {done:.1f} of {total}" if "extract" not in stage else (
            f"{stage} · {done} of {total} images")
        if not progress.get("total"):
            text = stage  # no count yet: "starting", not "starting · 0.0 of 1"
        if eta:
            text += f" · about {human_duration(eta)} left"
        st.progress(min(done / total, 1.0), text=text)
    elif state == "finished":
        st.success("Finished. The best epoch's model is saved.", icon=":material/check_circle:")
    elif state == "stopped":
        st.warning("Stopped. The best model so far is kept.", icon=":material/stop_circle:")
    elif state == "interrupted":
        st.warning(f"Interrupted: {status.get('error')}", icon=":material/warning:")
    elif state == "failed":
        st.error(f"Failed: {status.get('error')}", icon=":material/error:")
    elif state == "damaged":
        st.error(f"This run is {status.get('error')}. The other runs are not affected.",
                 icon=":material/broken_image:")
        return
    kept = run.kept_epoch() if state in ("stopped", "interrupted", "failed") else None
    if kept:
        st.caption(f"The model kept is epoch {kept['global_epoch']}'s (validation accuracy "
                   f"{100 * (kept.get('val_accuracy') or 0):.1f}%), the best that was saved.")
    for warning in run.warnings():
        st.caption(f":material/warning: {warning}")
    if state in ("queued", "running"):
        if st.button("Stop", icon=":material/stop:", key=f"stop_{run.name}"):
            jobs.stop(run)
            st.toast("Asked the run to stop; it ends within one batch.")
    records = run.epochs()
    if records:
        left, right = st.columns(2)
        left.plotly_chart(curves_figure({run.name: records}, "accuracy"), key="live_acc")
        right.plotly_chart(curves_figure({run.name: records}, "loss"), key="live_loss")
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

run = ui.current_run()
if run is not None:
    st.divider()
    state = run.status().get("state")
    if state in ("queued", "running"):
        live_run(run.name, state)
    else:
        show_run(run)
