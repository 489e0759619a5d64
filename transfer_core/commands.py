"""The command-line commands: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import duplicates
from .cli_shared import command, path_argument, progress_printer, workspace
from .datasets import (AS_LAID_OUT, PRESETS, TEST_FROM, SplitRequest, drop_later_copies, lay_out,
                       load_manifest, scan, split)
from .errors import DatasetError


def _numbers(text: str, kind):
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise DatasetError(f"{text!r} is not three comma-separated numbers, "
                           "e.g. 2000,1000,1000 or 0.7,0.15,0.15.") from None
    if len(values) != 3:
        raise DatasetError(f"{text!r} needs three numbers: train, validation, test.")
    return values


def _scan_text(report) -> str:
    lines = [f"{report.root} ({report.layout_text()}), {report.seconds:.1f} s"]
    skipped = report.skipped_counts()
    for name, count in report.counts().items():
        lines.append(f"  {name}: {count} usable, {skipped[name]} skipped")
    for item in report.skipped[:20]:
        lines.append(f"  skipped {item['path']}: {item['reason']}")
    if len(report.skipped) > 20:
        lines.append(f"  … and {len(report.skipped) - 20} more skipped (see --json)")
    lines += [f"  note: {note}" for note in report.notes]
    found = duplicates.summary(duplicates.locate(report.duplicates, []))
    lines.append(f"  duplicates: {found['exact']} exact and {found['near']} near pairs")
    return "\n".join(lines)


@command("scan", "find the images under a folder and check each one by decoding it")
class Scan:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("path", type=path_argument,
                            help="a folder: one sub-folder per class, or cat.1.jpg names")

    @staticmethod
    def run(args):
        report = scan(args.path, progress=None if args.json else progress_printer("checking"))
        return report.summary(), _scan_text(report)


@command("split", "split a folder into train/validation/test and save the manifest")
class Split:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("path", type=path_argument, help="the image folder")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--preset", choices=[AS_LAID_OUT, *PRESETS],
                           help="chapter: 2000/1000/1000 per class in index order (default); "
                                "book: 1000/500/500; as-laid-out: keep the split of folders "
                                "already split (train/cats, val/cats …)")
        group.add_argument("--counts",
                           help="per class: train,validation,test (e.g. 2000,1000,1000)")
        group.add_argument("--fractions", help="per class: e.g. 0.7,0.15,0.15 (shuffled by --seed)")
        parser.add_argument("--seed", type=int, default=SplitRequest.seed,
                            help="shuffle seed for custom splits")
        parser.add_argument("--test-from", choices=TEST_FROM, default=SplitRequest.test_from,
                            help="as-laid-out with train and validation folders only: take the "
                                 "test split from the training folder (--holdout of it), or "
                                 "evaluate on validation (optimistic: it also chose the best "
                                 "epoch)")
        parser.add_argument("--holdout", type=float, default=SplitRequest.holdout,
                            help="as-laid-out: the fraction of each class's training folder "
                                 "taken for a split that has no folder")
        parser.add_argument("--name", help="manifest file name (default: derived from the folder)")
        parser.add_argument("--layout", metavar="DIR", type=path_argument,
                            help="also lay the split out as folders (train/cats/…) in DIR")
        parser.add_argument("--copy", action="store_true", help="with --layout: copy, not symlink")
        parser.add_argument("--drop-duplicates", action="store_true",
                            help="leave out the later copy of each duplicate pair (test after "
                                 "validation after train); the manifest records what and why")

    @staticmethod
    def run(args):
        request = SplitRequest(
            preset=args.preset,
            counts=_numbers(args.counts, int) if args.counts else None,
            fractions=_numbers(args.fractions, float) if args.fractions else None,
            seed=args.seed, test_from=args.test_from, holdout=args.holdout)
        report = scan(args.path, progress=None if args.json else progress_printer("checking"))
        manifest = split(report, request)
        found = duplicates.summary(duplicates.locate(report.duplicates, manifest.rows))
        if args.drop_duplicates:
            manifest = drop_later_copies(manifest, report.duplicates)
        path = manifest.save(workspace(args), args.name)
        result = {"manifest": str(path), "split": request.describe(), "counts": manifest.counts(),
                  "skipped": report.skipped, "classes": manifest.classes,
                  "duplicates": found, "dropped": manifest.dropped}
        if args.layout:
            result["layout"] = str(lay_out(manifest, args.layout, copy=args.copy))
        counts = manifest.counts()
        text = "\n".join([f"manifest: {path}", f"split: {request.describe()}"] + [
            f"  {s}: " + ", ".join(f"{n} {c}" for c, n in counts[s].items()) for s in counts] + [
            f"duplicates: {found['exact']} exact and {found['near']} near pairs, {found['leaks']} "
            f"across splits; {len(manifest.dropped)} dropped"
            + ("" if args.drop_duplicates or not found["pairs"] else " (--drop-duplicates)")])
        return result, text


@command("extract", "compute (or read from the cache) the conv-base features of one split")
class Extract:
    @staticmethod
    def add_arguments(parser):
        from .backbones import BACKBONES
        from .runs import TrainConfig as d  # the features a run with these settings reads

        parser.add_argument("--data", required=True, type=path_argument,
                            help="a manifest made by `split`")
        parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
        parser.add_argument("--backbone", default=d.backbone, choices=list(BACKBONES))
        parser.add_argument("--weights", default=d.weights, type=path_argument,
                            help="imagenet (Keras download/cache), none, or a weights file")
        parser.add_argument("--image-size", type=int, default=None,
                            help="input size in pixels (default: the backbone's)")
        parser.add_argument("--preprocessing", default=d.preprocessing,
                            choices=["backbone", "rescale"],
                            help="the backbone's own preprocess_input, or the chapter's 1/255")
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--seed", type=int, default=d.seed,
                            help="random initialisation with --weights none")
        _precision_argument(parser)
        parser.add_argument("--shard", nargs="?", const="auto", default=None,
                            help="compute only shard I/N of the split (I from 0), whole batches "
                                 "of --batch-size, into --shard-folder; no value or auto: this "
                                 "worker's index and the number of workers in TF_CONFIG")
        parser.add_argument("--merge", action="store_true",
                            help="write the split's cache entry from every shard in "
                                 "--shard-folder (an error if one is missing or does not fit)")
        parser.add_argument("--shard-folder", type=path_argument, default=None,
                            help="where --shard writes and --merge reads (default: the "
                                 "workspace's feature cache); for a cluster, a shared folder")

    @staticmethod
    def run(args):
        from .features import FeatureCache, FeatureSpec
        from .inputs import check_split_files
        from .backbones import get_backbone
        from .precision import check_set, resolve

        manifest = load_manifest(Path(args.data))
        paths, labels = manifest.files(args.split)
        check_split_files(paths, args.split)
        size = args.image_size or get_backbone(args.backbone).default_size
        chosen = resolve(args.precision, args.backbone, args.weights, size,
                         check_set(*manifest.files("train")), workspace(args))
        spec = FeatureSpec(args.backbone, args.weights, args.image_size, args.preprocessing,
                           args.seed, precision=chosen["precision"])
        cache = FeatureCache(workspace(args))
        if args.shard or args.merge or args.shard_folder:
            return _sharded_extract(args, manifest, spec, cache)
        result = cache.extract(manifest, args.split, spec, args.batch_size,
                               progress=progress_printer(f"extracting {args.split}"))
        summary = {**result.summary(), "split": args.split, "spec": spec.resolved().__dict__,
                   "precision": chosen}
        rate = f", {result.images_per_second:.1f} images/s" if result.images_per_second else ""
        text = (f"{args.split}: {len(result.labels)} images → features "
                f"{tuple(result.features.shape[1:])}, cache {summary['cache']}, "
                f"{result.seconds:.2f} s{rate}, {chosen['precision']} ({chosen['reason']})"
                f"\n  {result.folder}")
        return summary, text


def _sharded_extract(args, manifest, spec, cache):
    from .shards import ShardError, extract_shard, merge_shards, parse_shard

    if bool(args.shard) == args.merge:
        raise ShardError("--shard and --merge are two steps: run each worker's --shard, then "
                         "--merge once they have all finished (--shard-folder goes with one).")
    if args.merge:
        result = merge_shards(cache, manifest, args.split, spec, args.shard_folder)
        how = "already cached" if result.hit else f"merged in {result.seconds:.2f} s"
        return ({**result.summary(), "split": args.split},
                f"{args.split}: {len(result.labels)} images, {how}\n  {result.folder}")
    shard = parse_shard(args.shard)
    result = extract_shard(cache, manifest, args.split, spec, shard, args.batch_size,
                           args.shard_folder,
                           progress_printer(f"extracting {args.split}, shard {shard}"))
    rows = f"rows {result.rows.start} to {result.rows.stop - 1}"
    text = (f"{args.split}: nothing to do, the merged features are cached" if result.cached
            else f"{args.split} shard {shard}: {rows} in {result.seconds:.2f} s "
                 f"({result.images_per_second:.1f} images/s)\n  {result.path}")
    return {**result.summary(), "split": args.split}, text


def _precision_argument(parser):
    from .precision import PRECISIONS
    from .runs import TrainConfig

    parser.add_argument("--precision", default=TrainConfig.precision, choices=PRECISIONS,
                        help="the conv base's arithmetic: auto takes bfloat16 where the CPU has "
                             "it and it was measured faster with the same predictions "
                             "(docs/BENCHMARKS.md, bfloat16)")


@command("cache", "show the feature cache's size on disk; --clear deletes it")
class Cache:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--clear", action="store_true",
                            help="delete every cached feature set (computed again when needed)")

    @staticmethod
    def run(args):
        from .features import FeatureCache
        from .jobs import clear_feature_cache
        from .storage import human_size

        ws = workspace(args)
        if args.clear:
            freed = clear_feature_cache(ws)
            return {"freed_bytes": freed}, f"feature cache cleared: {human_size(freed)} freed"
        cache = FeatureCache(ws)
        size = cache.size_bytes()
        return ({"folder": str(cache.root), "bytes": size},
                f"feature cache: {human_size(size)} in {cache.root}")


def _train_arguments(parser):
    from .distribute import SETTINGS as DISTRIBUTE
    from .runs import STRATEGIES, TrainConfig

    _run_settings_arguments(parser)
    parser.add_argument("--strategy", default=TrainConfig.strategy, choices=STRATEGIES)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--run-dir", default=None, type=path_argument,
                        help="the run folder (default: a new folder under the workspace's runs)")
    parser.add_argument("--distribute", default=TrainConfig.distribute, choices=DISTRIBUTE,
                        help="where to train: none (one device), mirrored (every local GPU), "
                             "multi-worker (the machines TF_CONFIG names; run the same command "
                             "on each), auto (multi-worker with TF_CONFIG, else mirrored with "
                             "several GPUs, else none); --batch-size stays the global batch "
                             "(README, \"Scaling out\")")


def _run_settings_arguments(parser, data_required: bool = True):
    """The settings `train` and `compare` share (all but the strategy and the seed)."""
    from .backbones import BACKBONES
    from .balance import CLASS_WEIGHTS
    from .runs import MONITORS, TrainConfig

    # Every default is TrainConfig's (the one source, shared with the Train page).
    d = TrainConfig
    defaults = "defaults follow the chapter"
    parser.add_argument("--data", required=data_required, type=path_argument,
                        help="a manifest made by `split`")
    parser.add_argument("--backbone", default=d.backbone, choices=list(BACKBONES))
    parser.add_argument("--weights", default=d.weights, type=path_argument,
                        help="imagenet, none, or a weights file")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help=f"epochs of the first phase ({defaults})")
    parser.add_argument("--fine-tune-epochs", type=int, default=d.fine_tune_epochs,
                        help="epochs of the fine-tuning phase (fine_tune only)")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--fine-tune-learning-rate", type=float,
                        default=d.fine_tune_learning_rate)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--image-size", type=int, default=d.image_size,
                        help="default: the backbone's")
    parser.add_argument("--fine-tune-from", default=d.fine_tune_from,
                        help="first unfrozen layer (default: the backbone's top block)")
    parser.add_argument("--preprocessing", default=d.preprocessing,
                        choices=["backbone", "rescale"])
    parser.add_argument("--pooling", default=d.pooling, choices=["flatten", "avg"],
                        help="how the head reduces the feature map (the chapter flattens)")
    parser.add_argument("--dropout", type=float, default=d.dropout,
                        help=f"the head's dropout rate (default {d.dropout}, the chapter's)")
    parser.add_argument("--monitor", default=None, choices=MONITORS,
                        help="which epoch's model is kept: the best by a validation metric, "
                             f"or last, the last epoch's (the chapter's way; default {d.monitor}, "
                             "val_loss with --early-stopping)")
    parser.add_argument("--early-stopping", type=int, default=d.early_stopping_patience,
                        metavar="PATIENCE",
                        help="stop after PATIENCE epochs without improvement (off by default)")
    parser.add_argument("--view-bank", type=view_bank_argument, default=d.view_bank,
                        metavar="auto|K",
                        help="augmented strategies: compute K augmented views of each training "
                             "image once through the frozen part of the base, then train only "
                             f"the rest on them (default {d.view_bank}: one view per three "
                             "epochs, 3 to 30, fewer if the disk is short; 0: augment on the "
                             "fly, the chapter's way; docs/BENCHMARKS.md compares them)")
    parser.add_argument("--fine-tune-on-bank", action="store_true",
                        help="fine_tune with a view bank: train the unfrozen block on the "
                             "stored views too, about twice as fast; by default it trains on "
                             "new augmented photos every epoch, as the chapter does (the bank "
                             "ended 0.3 points lower on MobileNetV2: docs/LADDER.md)")
    parser.add_argument("--class-weight", default=d.class_weight, choices=CLASS_WEIGHTS,
                        help="balanced: weigh each class inversely to its share of the "
                             "training photos (for an imbalanced split)")
    parser.add_argument("--settings", choices=["recommended", "chapter"], default=None,
                        help="recommended: measure the head (linear or Dense 256, its input), "
                             "learning rate and epochs on "
                             "the training and validation splits when the run starts (they "
                             "replace --pooling, --learning-rate, --epochs, --early-stopping); "
                             "default: chapter for the chapter's presets, else recommended")
    _precision_argument(parser)


def view_bank_argument(text: str) -> int | str:
    """--view-bank: "auto" or a whole number (TrainConfig checks its range)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto or a whole number, got {text!r}") \
            from None


def _train_config(args, **override):
    """The TrainConfig of the flags; `override` sets what `compare` varies (strategy, seed)."""
    from .runs import TrainConfig, monitor_for

    settings = {
        "manifest": str(Path(args.data).resolve()), "backbone": args.backbone,
        "weights": args.weights, "strategy": getattr(args, "strategy", None),
        "epochs": args.epochs, "fine_tune_epochs": args.fine_tune_epochs,
        "learning_rate": args.learning_rate,
        "fine_tune_learning_rate": args.fine_tune_learning_rate,
        "batch_size": args.batch_size, "image_size": args.image_size,
        "fine_tune_from": args.fine_tune_from, "preprocessing": args.preprocessing,
        "pooling": args.pooling, "dropout": args.dropout,
        "monitor": monitor_for(args.monitor, args.early_stopping),
        "early_stopping_patience": args.early_stopping, "seed": getattr(args, "seed", None),
        "view_bank": args.view_bank, "fine_tune_on_bank": args.fine_tune_on_bank,
        "class_weight": args.class_weight,
        "precision": args.precision, "settings": _settings(args),
        "distribute": getattr(args, "distribute", TrainConfig.distribute)}  # compare: default
    return TrainConfig(**{**settings, **override})


def _settings(args) -> str:
    from .recommend import default_settings

    if args.settings:
        return args.settings
    try:
        return default_settings(load_manifest(args.data))[0]
    except DatasetError:  # no readable manifest: the checks before training say so in full
        return "chapter"


def _fmt(value, percent=False):
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if percent else f"{value:.4f}"


def _epoch_line(record) -> str:
    return (f"[{record['phase_name']}] epoch {record['epoch']} ({record['seconds']:.0f} s): "
            f"loss {_fmt(record['loss'])}, accuracy {_fmt(record['accuracy'], True)}, "
            f"val_loss {_fmt(record['val_loss'])}, "
            f"val_accuracy {_fmt(record['val_accuracy'], True)}")


def _follow(run, done_event):
    """Print each finished epoch (and the extraction stage) on stderr while training runs."""
    shown, last_stage = 0, None
    while True:
        finished = done_event.wait(1.0)
        epochs = run.epochs()
        for record in epochs[shown:]:
            print(_epoch_line(record), file=sys.stderr, flush=True)
        shown = len(epochs)
        stage = run.status().get("stage")
        if stage and stage != last_stage:
            last_stage = stage
            print(f"{stage}…", file=sys.stderr, flush=True)
        if finished:
            return


@command("train", "train a classifier on a split with one of the chapter's three strategies")
class Train:
    add_arguments = staticmethod(_train_arguments)

    @staticmethod
    def run(args):
        import threading

        from .jobs import run_when_free
        from .runs import Run

        from .distribute import check, writes_run_files

        ws = workspace(args)
        config = _train_config(args)
        _check_training_files(config.manifest)  # before a run folder is made for nothing
        check(config.distribute)
        if not writes_run_files(config.distribute):
            return _train_as_worker(config, ws)
        run = Run.create_in(args.run_dir, config) if args.run_dir else Run.create(ws, config)
        print(f"run: {run.folder}", file=sys.stderr)
        done = threading.Event()
        follower = threading.Thread(target=_follow, args=(run, done), daemon=True)
        follower.start()
        try:
            status = run_when_free(run, ws)
        except KeyboardInterrupt:
            run.request_stop()
            status = run.update_status(state="stopped", pid=None, stage="interrupted")
        finally:
            done.set()
            follower.join()
        summary = run.summary()
        result = {**summary, "status": status, "audit": _audit_brief(run.audit())}
        bank = status.get("view_bank") or {}
        text = (f"{run.name}: {status.get('state')}"
                + (f" — {status['error']}" if status.get("error") else "")
                + (f"\n  view bank: {bank['views']} views ({bank.get('reason')})"
                   if bank.get("views") else "")
                + f"\n  best val_accuracy {_fmt(summary['best_val_accuracy'], True)}"
                + f", model: {run.model_path if run.model_path.exists() else 'none'}")
        result["exit_code"] = 0 if status.get("state") in ("finished", "stopped") else 1
        return result, text


def _train_as_worker(config, ws):
    """A worker of a multi-worker run other than the chief: it trains in step with the others,
    and the chief (worker 0) writes the run."""
    from .distribute import cluster_from_environment
    from .jobs import train_as_worker

    cluster = cluster_from_environment()
    print(f"worker {cluster.index} of {len(cluster.workers)}: the chief ({cluster.workers[0]}) "
          "writes the run", file=sys.stderr)
    status = train_as_worker(config, ws)
    text = (f"worker {cluster.index}: {status.get('state')}"
            + (f" — {status['error']}" if status.get("error") else ""))
    return ({"status": status, "worker": cluster.index,
             "exit_code": 0 if status.get("state") in ("finished", "stopped") else 1}, text)


def _check_training_files(manifest_path: str) -> None:
    from .inputs import check_split_files

    manifest = load_manifest(manifest_path)
    for split_name in ("train", "validation"):
        check_split_files(manifest.files(split_name)[0], split_name)


def _audit_brief(audit):
    if not audit:
        return None
    return [{k: v for k, v in phase.items() if k != "frozen_layer_checksums"}
            for phase in audit["phases"]]


@command("worker", "(internal) train an existing run folder when the training slot is free")
class Worker:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("run", type=path_argument, help="the run folder")

    @staticmethod
    def run(args):
        from .jobs import run_when_free
        from .runs import Run

        run = Run(args.run)
        status = run_when_free(run, workspace(args))
        return {"status": status}, f"{run.name}: {status.get('state')}"


@command("evaluate", "evaluate a run's model on the test split (saved as evaluation.json)")
class Evaluate:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("run", type=path_argument, help="a run's name or folder")
        parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
        parser.add_argument("--force", action="store_true", help="recompute even if cached")

    @staticmethod
    def run(args):
        from .baseline import baseline_lines
        from .evaluation import evaluate
        from .runs import find_run
        from .stats import accuracy_text

        run = find_run(workspace(args), args.run)
        result = evaluate(run, split=args.split, force=args.force,
                          progress=None if args.json else progress_printer("evaluating"))
        lines = [f"{run.name} on {result['split']}: accuracy "
                 f"{accuracy_text(result['accuracy'], result['images'])}, "
                 f"loss {_fmt(result['loss'])}"
                 + (f", ROC AUC {result['roc_auc']:.4f}" if result.get("roc_auc") else "")]
        lines += [f"  {c}: precision {_fmt(m['precision'], True)}, recall {_fmt(m['recall'], True)}"
                  f", F1 {_fmt(m['f1'], True)}" for c, m in result["per_class"].items()]
        lines.append(f"  confusion matrix (rows: true {result['classes']}): "
                     f"{result['confusion_matrix']}")
        lines += [f"  {line}" for line in baseline_lines(result)]
        return result, "\n".join(lines)


def _run_and_images_arguments(parser) -> None:
    parser.add_argument("run", type=path_argument, help="a run's name or folder")
    parser.add_argument("images", nargs="+", type=path_argument, help="image files")


@command("predict", "classify image files with a run's model")
class Predict:
    @staticmethod
    def add_arguments(parser):
        _run_and_images_arguments(parser)

    @staticmethod
    def run(args):
        from .predict import Predictor
        from .runs import find_run

        predictor = Predictor(find_run(workspace(args), args.run))
        predictor.prepare_ood(None if args.json else progress_printer("measuring training photos"))
        if predictor.ood_problem:
            print(predictor.ood_problem, file=sys.stderr)
        results = [{"path": path, **result}
                   for path, result in zip(args.images, predictor.predict(args.images))]
        lines = [f"{r['path']}: " + (f"error: {r['error']}" if "error" in r else
                                     f"{r['label']} ({100 * r['confidence']:.1f}%)"
                                     + _none_of_these(r, predictor.classes))
                 for r in results]
        return {"predictions": results}, "\n".join(lines)


def _none_of_these(result: dict, classes: list[str]) -> str:
    if not result.get("out_of_distribution"):
        return ""
    return (f", but it does not look like any of: {', '.join(classes)} (score "
            f"{result['ood_score']:.3f}, threshold {result['ood_threshold']:.3f})")


@command("explain", "write Grad-CAM overlays: where a run's model looked in each image")
class Explain:
    @staticmethod
    def add_arguments(parser):
        _run_and_images_arguments(parser)
        parser.add_argument("--out", required=True, type=path_argument,
                            help="the folder the overlay PNGs go to")
        parser.add_argument("--class", dest="class_name", default=None,
                            help="the class to explain (default: each image's predicted class)")

    @staticmethod
    def run(args):
        from .explain import explain_files
        from .runs import find_run

        run = find_run(workspace(args), args.run)
        results = explain_files(run, args.images, args.out, args.class_name)
        lines = [f"{r['path']}: " + (f"error: {r['error']}" if "error" in r else
                                     f"{r['label']} ({100 * r['confidence']:.1f}%) → "
                                     f"{r['heatmap']}") for r in results]
        return {"explanations": results}, "\n".join(lines)


@command("runs", "list the training runs with their state and best metrics")
class Runs:
    @staticmethod
    def add_arguments(parser):
        pass

    @staticmethod
    def run(args):
        from .runs import list_runs, summary_line

        rows = [run.summary() for run in list_runs(workspace(args))]
        return {"runs": rows}, "\n".join(map(summary_line, rows)) or "no runs yet"


@command("stop", "ask a running or queued run to stop (it ends within one batch)")
class Stop:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("run", type=path_argument, help="a run's name or folder")

    @staticmethod
    def run(args):
        from .jobs import stop
        from .runs import find_run

        run = find_run(workspace(args), args.run)
        stop(run)
        return {"run": run.name, "stop_requested": True}, f"asked {run.name} to stop"


@command("export", "export a run's model (Keras, SavedModel, TFLite, int8) with a parity check")
class Export:
    @staticmethod
    def add_arguments(parser):
        from .export_formats import FORMATS

        parser.add_argument("run", type=path_argument, help="a run's name or folder")
        parser.add_argument("--formats", default=",".join(FORMATS),
                            help=f"comma-separated, some of {','.join(FORMATS)} (default: all)")
        parser.add_argument("--out", type=path_argument,
                            help="folder for RUN-export.zip (default: the run's export/)")

    @staticmethod
    def run(args):
        from .export import export_run, export_text
        from .runs import find_run

        run = find_run(workspace(args), args.run)
        result = export_run(run, args.formats, args.out,
                            progress=lambda text: print(f"{text}…", file=sys.stderr, flush=True))
        return result, export_text(result)
@command("compare", "train strategies × seeds as one study, then compare their test accuracy")
class Compare:
    @staticmethod
    def add_arguments(parser):
        from .studies import SCRATCH_LEARNING_RATE

        _run_settings_arguments(parser, data_required=False)  # not to resume --name
        parser.add_argument("--strategies", default="feature_extraction,fine_tune",
                            help="comma-separated strategies (from_scratch, feature_extraction, "
                                 "feature_extraction_augmented, fine_tune)")
        parser.add_argument("--seeds", type=int, default=3,
                            help="seeds 1 … N for every strategy (paired: seed k of each "
                                 "strategy shares everything but the strategy)")
        parser.add_argument("--name", default=None,
                            help="the study's name; an existing study is resumed (what is "
                                 "missing, stopped or failed is queued again) and reported")
        parser.add_argument("--scratch-learning-rate", type=float, default=SCRATCH_LEARNING_RATE,
                            help="from_scratch's learning rate (the chapter's 5.2: 1e-4)")
        parser.add_argument("--no-wait", action="store_true",
                            help="queue the runs and return (follow with the same --name)")

    @staticmethod
    def run(args):
        from .studies import Study, find_study, seeds_for, table_text

        ws = workspace(args)
        study = find_study(ws, args.name) if args.name else None
        if study is None:
            if not args.data:
                raise DatasetError("compare needs --data MANIFEST to start a study (or --name "
                                   "of an existing study to resume it).")
            seeds = seeds_for(args.seeds)
            strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
            base = _train_config(args, strategy=strategies[0] if strategies else None,
                                 seed=seeds[0])
            _check_training_files(base.manifest)  # before any run folder is made for nothing
            study = Study.create(ws, base, strategies, seeds, args.name,
                                 args.scratch_learning_rate)
        queued = study.start()
        print(f"study: {study.folder} ({len(queued)} runs queued)", file=sys.stderr)
        if args.no_wait:
            progress = study.progress()
            return ({"study": study.name, "queued": queued, "progress": progress},
                    (f"{study.name}: {progress['finished']} of {progress['total']} runs "
                     f"finished; {len(queued)} queued. Follow with --name {study.name}."))
        _wait_for_study(study)
        results = study.results(progress=lambda name: print(f"evaluating {name}…",
                                                            file=sys.stderr, flush=True))
        results["study"] = str(study.folder)
        return results, table_text(results)


def _wait_for_study(study, poll_seconds: float = 2.0) -> None:
    """Print a line whenever the study's progress changes, until no run is queued or running.
    Ctrl+C leaves the runs training in the background (they are their own processes)."""
    last = None
    try:
        while True:
            progress = study.progress()
            current = progress["current"]
            line = (f"{progress['ended']}/{progress['total']} runs ended"
                    + (f"; now {current['strategy']} seed {current['seed']}: {current['stage']}"
                       if current else ""))
            if line != last:
                print(line, file=sys.stderr, flush=True)
                last = line
            if not progress["waiting"]:
                return
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        print(f"stopped waiting; the runs go on. Report later with --name {study.name}",
              file=sys.stderr)
        raise
