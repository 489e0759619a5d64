"""A training run is a folder: the only channel between the process that trains and the pages
that show it, so a run survives reruns, page switches, closed tabs and a second browser.

config.json    everything needed to repeat the run (TrainConfig)
status.json    queued / running / finished / failed / stopped, phase, epoch, progress, error,
               saved_epoch (the epoch whose model is in model.keras)
metrics.jsonl  one line per epoch and phase, and a progress line every few batches
model.keras    the best epoch so far by the configured monitor (the last epoch with "last")
audit.json     the freeze audit: what was trainable in each phase, and proof the rest was not
evaluation.json  test-split results, written by `evaluate`

Every file is read defensively: a damaged one (truncated, edited, another format) makes its
run read as "damaged: <file>: <why>" (config.json, status.json) or as a warning (a metrics
line, audit.json, evaluation.json), never an exception that would hide the other runs.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import config as paths
from .augment import CHAPTER, AugmentationSettings
from .backbones import BACKBONES, get_backbone
from .balance import CLASS_WEIGHTS
from .distribute import SETTINGS as DISTRIBUTE_SETTINGS
from .precision import PRECISIONS
from .datasets import load_manifest
from .errors import RunError, TransferLabError
from .stats import accuracy_text
from .storage import (DamagedFile, StorageError, append_jsonl, free_path, process_alive,
                      read_json_object, read_jsonl, temp_writer, write_failure,
                      write_json_atomic, write_json_in_place)

# In the chapter's order, the ladder of 5.2 and 5.3: each rung reuses more of a pretrained base.
STRATEGIES = ("from_scratch", "feature_extraction", "feature_extraction_augmented", "fine_tune")
# Which epoch's model a run keeps: the best by a validation metric, or "last", the last epoch
# as the chapter does (its validation loss stops improving while the accuracy still rises).
MONITORS = ("val_loss", "val_accuracy", "last")
# What status.json records; "interrupted" and "damaged" are read, never written.
RECORDED_STATES = ("queued", "running", "finished", "failed", "stopped")
# A run in these states is over, and its model.keras (when whole) is what it kept.
ENDED_STATES = ("finished", "stopped", "interrupted", "failed")
# The type a field annotated so must hold (JSON gives ints for whole floats).
_KINDS = {"int": int, "float": (int, float), "str": str, "dict": dict, "list[str]": list,
          "None": type(None), "bool": bool}


def monitor_for(asked: str | None, early_stopping_patience: int | None) -> str:
    """The monitor asked for, else the default; early stopping watches the validation loss, so
    with it (and no monitor asked for) the best epoch by validation loss is kept."""
    if asked:
        return asked
    return "val_loss" if early_stopping_patience else TrainConfig.monitor


@dataclass
class TrainConfig:
    """A run's settings; the defaults are the chapter's (RMSprop 2e-5, batch 20, 30 epochs,
    fine-tuning from the backbone's top block at 1e-5 for 100 more epochs), and the one source
    of them: the CLI and the Train page read theirs from this class (`TrainConfig.epochs`)."""

    manifest: str
    backbone: str = "vgg16"
    weights: str = "imagenet"
    strategy: str = "feature_extraction"
    epochs: int = 30
    fine_tune_epochs: int = 100
    learning_rate: float = 2e-5
    fine_tune_learning_rate: float = 1e-5
    batch_size: int = 20
    image_size: int | None = None
    preprocessing: str = "backbone"
    fine_tune_from: str | None = None
    pooling: str = "flatten"  # the chapter flattens; "avg" is global average pooling
    dense_units: int = 256  # 0: no hidden layer, pooling → [standardize] → dropout → output
    dropout: float = 0.5
    # The pooled features standardized inside the head (a Normalization layer adapted on the
    # training split's, saved with the model), as the logistic regression's StandardScaler.
    standardize: bool = False
    weight_decay: float = 0.0  # L2 on the output layer's kernel: loss + weight_decay · Σ w²
    # The chapter keeps the last epoch; measured, it kept better models than the lowest
    # validation loss on average, 97.43% against 97.28% (docs/BENCHMARKS.md, "View bank at the
    # chapter's epochs"). Early stopping watches the validation loss instead (see `monitor_for`).
    monitor: str = "last"
    early_stopping_patience: int | None = None
    seed: int = 1337
    # Augmented views per training image, computed once through the frozen part of the base
    # (0: augment on the fly and run the whole base every epoch, the chapter's way). "auto":
    # about one view per three epochs that read the bank, 3 to 30, fewer when the disk is
    # short (bank.py); a bank of 3 read for many epochs was learnt by heart (issue 15).
    view_bank: int | str = "auto"
    # fine_tune with a bank: True reads the bank in the fine-tuning phase too (the top of the
    # base trains on stored prefix features). False, the default: the head trains on the bank,
    # then the fine-tuning phase runs the base on the fly: measured on 3 seeds, fine-tuning on
    # a bank ended 0.28-0.33 points below on the fly while the head phase on it lost nothing
    # (docs/BENCHMARKS.md, "View bank at the chapter's epochs", sessions 9-11).
    fine_tune_on_bank: bool = False
    # fine_tune on a bank: in the fine-tuning phase each photo is a random blend of two of its
    # views, λ from [-reach, 1 + reach) (training.ViewBank); None: no blending. Off: measured,
    # neither reach 0 nor 0.5 lifted fine-tuning on the bank to on the fly's accuracy
    # (docs/BENCHMARKS.md, session 10), so neither the CLI nor the app offer it.
    blend_reach: float | None = None
    augmentation: dict = field(default_factory=CHAPTER.to_dict)
    # "balanced": each class weighs in the loss inversely to its share of the training photos
    class_weight: str = "none"
    # The conv base's arithmetic: "auto" takes bfloat16 where the CPU has it natively and it
    # was measured faster with the same predictions (precision.py); the head stays float32.
    precision: str = "auto"
    # "recommended": the head input, learning rate and epochs are measured on the training
    # and validation splits when the run starts (recommend.py), the search kept in
    # `recommendation`; "chapter": the settings as given.
    settings: str = "chapter"
    recommendation: dict = field(default_factory=dict)
    # Where it trains (distribute.py): "auto" takes the machines TF_CONFIG names, else every
    # local GPU, else one device; batch_size is the global batch whatever it chooses.
    distribute: str = "auto"
    classes: list[str] = field(default_factory=list)  # filled from the manifest

    def __post_init__(self):
        self._check_types()
        get_backbone(self.backbone)
        self.image_size = self.image_size or BACKBONES[self.backbone].default_size
        self.fine_tune_from = self.fine_tune_from or BACKBONES[self.backbone].fine_tune_from
        checks = [
            (self.strategy in STRATEGIES, "strategy", f"one of {', '.join(STRATEGIES)}"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.strategy != "fine_tune" or self.fine_tune_epochs >= 1, "fine_tune_epochs",
             "at least 1 for the fine_tune strategy"),
            (self.learning_rate > 0, "learning_rate", "positive"),
            (self.fine_tune_learning_rate > 0, "fine_tune_learning_rate", "positive"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (32 <= self.image_size <= 1024, "image_size", "between 32 and 1024 pixels"),
            # Four 3×3 convolutions, each halved by pooling, need 46 pixels to leave one.
            (self.strategy != "from_scratch" or self.image_size >= 46, "image_size",
             "at least 46 pixels for from_scratch (its four conv blocks)"),
            (self.preprocessing in ("backbone", "rescale"), "preprocessing", "backbone or rescale"),
            (self.pooling in ("flatten", "avg"), "pooling", "flatten or avg"),
            (self.dense_units >= 0, "dense_units", "at least 0 (0: no hidden layer)"),
            (not self.standardize or self.pooling == "avg", "standardize",
             "off with pooling flatten (it standardizes the averaged features)"),
            (self.weight_decay >= 0, "weight_decay", "at least 0"),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
            (self.monitor in MONITORS, "monitor", f"one of {', '.join(MONITORS)}"),
            (self.view_bank == "auto" or isinstance(self.view_bank, int)
             and 0 <= self.view_bank <= 100, "view_bank", "auto or between 0 and 100"),
            (self.blend_reach is None or self.blend_reach >= 0, "blend_reach",
             "at least 0 (or unset: no blending)"),
            # blends are of the stored views, which only fine-tuning on the bank reads
            (self.blend_reach is None or self.fine_tune_on_bank, "blend_reach",
             "unset unless fine_tune_on_bank (it blends the views fine-tuning reads)"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             "early_stopping_patience", "at least 1 (or unset)"),
            (self.monitor != "last" or self.early_stopping_patience is None,
             "early_stopping_patience", "unset when the monitor is last (nothing to stop on)"),
            (all(isinstance(c, str) for c in self.classes), "classes", "a list of names"),
            (self.class_weight in CLASS_WEIGHTS, "class_weight", " or ".join(CLASS_WEIGHTS)),
            (self.precision in PRECISIONS, "precision", " or ".join(PRECISIONS)),
            (self.settings in ("chapter", "recommended"), "settings", "chapter or recommended"),
            (self.distribute in DISTRIBUTE_SETTINGS, "distribute",
             f"one of {', '.join(DISTRIBUTE_SETTINGS)}"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise RunError(f"{name} must be {rule} (got {getattr(self, name)!r}).")
        try:
            AugmentationSettings(**self.augmentation)
        except TypeError:
            known = ", ".join(AugmentationSettings().to_dict())
            raise RunError(f"augmentation has an unknown setting in {self.augmentation}; "
                           f"the settings are: {known}.") from None

    def _check_types(self):
        """Each setting of the type its field says (a hand-edited config.json may hold "30"),
        numbers of any kind (numpy's too) made plain Python ones."""
        if isinstance(self.manifest, os.PathLike):
            self.manifest = os.fspath(self.manifest)
        for f in fields(self):
            value, kinds = _plain_number(getattr(self, f.name)), f.type.split(" | ")
            if "float" not in kinds and isinstance(value, float) and value.is_integer():
                value = int(value)  # 30.0 epochs is 30 epochs
            setattr(self, f.name, value)
            # True is an int to Python, not to a setting: only a bool field takes one
            if (isinstance(value, bool) != ("bool" in kinds)
                    or not isinstance(value, tuple(_KINDS[k] for k in kinds))):
                raise RunError(f"{f.name} must be {' or '.join(kinds)} (got {value!r}).")

    @property
    def phases(self) -> list[str]:
        return ["head", "fine_tune"] if self.strategy == "fine_tune" else ["head"]

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.fine_tune_epochs if self.strategy == "fine_tune" else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        if "manifest" not in data:
            raise RunError("manifest must be given (the split the run trains on).")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Run:
    """One run folder and the typed reads and writes of its files."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "config.json").exists():
            raise RunError(f"{self.folder} is not a training run (no config.json).")

    @classmethod
    def create(cls, workspace: str | Path, config: TrainConfig, name: str | None = None) -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{config.backbone}-{config.strategy}"
        # Never hidden: a hidden name is what temporary files have.
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).lstrip(".") or "run"
        return cls.create_in(free_path(paths.runs_dir(Path(workspace)) / base), config)

    @classmethod
    def create_in(cls, folder: str | Path, config: TrainConfig) -> Run:
        folder = Path(folder)
        if (folder / "config.json").exists():
            raise RunError(f"{folder} already holds a run; choose another folder.")
        if not config.classes:
            config.classes = load_manifest(config.manifest).classes
        existed = folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "status.json", {"state": "queued", "created": time.time()})
            write_json_atomic(folder / "config.json", config.to_dict())  # now it is a run
        except OSError as exc:
            if not existed:  # half a run would read as damaged: leave nothing
                shutil.rmtree(folder, ignore_errors=True)
            raise StorageError(write_failure(exc, folder.parent, "creating the run")) from None
        return cls(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config(self) -> TrainConfig:
        """The run's settings; RunError (one line: which file, why) when config.json is
        damaged or names what this version does not know."""
        try:
            return _read_config(self.folder / "config.json")
        except _DAMAGE as exc:
            raise RunError(f"Run {self.name} is damaged: {exc}") from None

    @property
    def model_path(self) -> Path:
        return self.folder / "model.keras"

    @property
    def stop_path(self) -> Path:
        return self.folder / "stop"

    @property
    def log_path(self) -> Path:
        return self.folder / "log.txt"

    # ---- what state the run is in ---------------------------------------------------------

    def problem(self) -> str | None:
        """Why the run cannot be read ("damaged: config.json: …"), or None when it can."""
        try:
            _read_config(self.folder / "config.json")
            _read_status(self.folder / "status.json")
        except _DAMAGE as exc:
            return f"damaged: {exc}"
        return None

    def status(self) -> dict:
        """The recorded status, as a reader should take it: "damaged" (with the reason as the
        error) when config.json or status.json cannot be read, and "interrupted" when the
        process that trained it is gone without a final word (kill -9, out of memory, reboot)."""
        problem = self.problem()
        if problem:
            return {"state": "damaged", "error": problem}
        status = _read_status(self.folder / "status.json")
        if status.get("state") in ("running", "queued") and status.get("pid") \
                and not process_alive(status["pid"]):
            status = {**status, "state": "interrupted", "pid": None,
                      "error": "The training process ended without a final word (killed, out "
                               f"of memory or a restart; see {self.log_path.name})."}
        return status

    def update_status(self, **changes) -> dict:
        status = self._status_for_update()
        status.update(changes, updated=time.time())
        with self._writing("writing the run's status"):
            write_json_atomic(self.folder / "status.json", status)
        return status

    @contextlib.contextmanager
    def _writing(self, doing: str):
        """A failed write in the run folder as one line: StorageError, saying where and why."""
        try:
            yield
        except OSError as exc:
            raise StorageError(write_failure(exc, self.folder, doing)) from exc

    def finish(self, **changes) -> dict:
        """The run's last status write, made to land even on a full disk: on failure this
        process's temporary files in the run folder are removed and the write is retried,
        and at last status.json is rewritten in its own blocks."""
        status = self._status_for_update()
        status.update(changes, updated=time.time())
        try:
            write_json_atomic(self.folder / "status.json", status)
            return status
        except OSError:
            self.remove_own_temps()
        try:
            write_json_atomic(self.folder / "status.json", status)
        except OSError:
            write_json_in_place(self.folder / "status.json", status)
        return status

    def _status_for_update(self) -> dict:
        """The recorded status to build on; a damaged one is replaced, not kept."""
        try:
            return _read_status(self.folder / "status.json")
        except DamagedFile:
            return {}

    def remove_own_temps(self) -> None:
        """The temporary files this process left in the run folder (after a failed write)."""
        for entry in self.folder.glob(".*"):
            if temp_writer(entry.name) == os.getpid():
                entry.unlink(missing_ok=True)

    # ---- metrics ------------------------------------------------------------------------

    def metrics(self) -> list[dict]:
        return self._metrics()[0]

    def skipped_metric_lines(self) -> int:
        """Lines of metrics.jsonl skipped as damaged (not a JSON object, or an epoch line
        without its numbers)."""
        return self._metrics()[1]

    def _metrics(self) -> tuple[list[dict], int]:
        records, skipped = read_jsonl(self.folder / "metrics.jsonl")
        good = [r for r in records if r.get("type") != "epoch" or _is_epoch_record(r)]
        return good, skipped + len(records) - len(good)

    def epochs(self) -> list[dict]:
        return [r for r in self.metrics() if r.get("type") == "epoch"]

    def log_metric(self, record: dict) -> None:
        with self._writing("writing the run's metrics"):
            append_jsonl(self.folder / "metrics.jsonl", {**record, "time": time.time()})

    # ---- the model kept -------------------------------------------------------------------

    def kept_epoch(self) -> dict | None:
        """The epoch line of the model that was kept: the best by the monitor among the epochs
        whose model was saved (not an epoch whose save was interrupted or failed)."""
        return _kept(self.status(), self.epochs()) if self.model_path.exists() else None

    def kept_epoch_if_cut_short(self, state: str | None = None) -> dict | None:
        """The kept epoch's line when the run ended without finishing (stopped, interrupted,
        failed), where the model is not the last epoch's: what the pages point out."""
        state = state or self.status().get("state")
        cut_short = state in ENDED_STATES and state != "finished"
        return self.kept_epoch() if cut_short else None

    def model_problem(self) -> str | None:
        """Why the run has no model to evaluate or predict with, None when it has one. The one
        rule for every front door: the run has ended (finished, stopped, interrupted, or
        failed after a save) and model.keras is a whole Keras archive."""
        status = self.status()
        state, error = status.get("state"), status.get("error")
        if state == "damaged":
            return f"Run {self.name} is {error}."
        if state in ("queued", "running"):
            return f"Run {self.name} is still {state}: use its model when it ends (or stop it)."
        if not self.model_path.exists():
            done = len(self.epochs())
            if state == "failed" and done:
                return (f"Run {self.name} failed after {done} epoch{'s' * (done > 1)} without "
                        f"saving a model: {error}")
            if state in ENDED_STATES and done:
                return f"Run {self.name} was {state} before its first model was saved."
            if state == "failed":
                return f"Run {self.name} failed before its first epoch: {error}"
            return f"Run {self.name} has not finished an epoch yet."
        if not whole_keras_archive(self.model_path):  # the words predict.load_model uses
            return (f"{self.model_path.name} in run {self.name} is damaged or incomplete (not a "
                    "complete .keras archive): train again.")
        return None

    def has_usable_model(self) -> bool:
        return self.model_problem() is None

    # ---- the other files ----------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_path.write_text(str(time.time()))

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def audit(self) -> dict | None:
        """The freeze audit; None when there is none or it is damaged (see warnings())."""
        try:
            return _read_audit(self.folder / "audit.json")
        except DamagedFile:
            return None

    def write_audit(self, audit: dict) -> None:
        with self._writing("writing the freeze audit"):
            write_json_atomic(self.folder / "audit.json", audit)

    def evaluation(self) -> dict | None:
        """The test results; None when there are none or they are damaged (evaluating again
        replaces them)."""
        try:
            return _read_evaluation(self.folder / "evaluation.json")
        except DamagedFile:
            return None

    def warnings(self) -> list[str]:
        """What is damaged without making the run unusable: metrics lines, the audit, the
        evaluation."""
        return self._warnings(self.skipped_metric_lines())

    def _warnings(self, skipped: int) -> list[str]:
        notes = []
        if skipped:
            notes.append(f"damaged: metrics.jsonl: {skipped} line{'s' * (skipped > 1)} "
                         "skipped (not a JSON object, or an epoch line without its numbers)")
        for read, path, fix in ((_read_audit, "audit.json", ""),
                                (_read_evaluation, "evaluation.json",
                                 "; evaluating again replaces it")):
            try:
                read(self.folder / path)
            except DamagedFile as exc:
                notes.append(f"damaged: {exc}{fix}")
        return notes

    def summary(self) -> dict:
        """One row for `runs` and the app's run pickers; a damaged run gets one too, with
        the reason as its error. The metrics are those of the model kept."""
        row = {"name": self.name, "folder": str(self.folder), "state": "damaged",
               "backbone": None, "strategy": None, "weights": None, "epochs_done": None,
               "epochs_total": None, "kept_epoch": None, "best_val_accuracy": None,
               "best_val_loss": None, "test_accuracy": None, "test_images": None, "created": None,
               "error": self.problem(), "warnings": [], "metric_lines_skipped": 0}
        if row["error"]:
            return row
        config, status = self.config, self.status()
        records, skipped = self._metrics()
        epochs = [r for r in records if r.get("type") == "epoch"]
        kept = _kept(status, epochs) if self.model_path.exists() else None
        evaluation = self.evaluation() or {}
        row.update(state=status.get("state"), backbone=config.backbone,
                   strategy=config.strategy, weights=config.weights, epochs_done=len(epochs),
                   epochs_total=config.total_epochs, test_accuracy=evaluation.get("accuracy"),
                   test_images=evaluation.get("images"),
                   created=status.get("created"), error=status.get("error"),
                   warnings=self._warnings(skipped), metric_lines_skipped=skipped)
        if kept:
            row.update(kept_epoch=kept["global_epoch"], best_val_accuracy=kept["val_accuracy"],
                       best_val_loss=kept["val_loss"])
        return row


def _kept(status: dict, epochs: list[dict]) -> dict | None:
    """The epoch line of the saved model, by status.json's saved_epoch (runs trained before
    it was recorded: their best epoch, saved in the same write)."""
    saved = status.get("saved_epoch", (status.get("best") or {}).get("global_epoch"))
    if saved is None:
        return None
    return next((r for r in epochs if r["global_epoch"] == saved), None)


def summary_line(row: dict) -> str:
    """A run's summary as one line of `runs`."""
    if row["state"] == "damaged":
        return f"{row['name']}: {row['error']}"
    line = (f"{row['name']}: {row['state']}, {row['epochs_done']}/{row['epochs_total']} epochs, "
            f"best val_accuracy {_percent(row['best_val_accuracy'])}")
    if row["kept_epoch"] is not None:
        line += f" (model of epoch {row['kept_epoch']})"
    line += f", test accuracy {_test_accuracy(row)}"
    if row["error"] and row["state"] in ("failed", "interrupted"):
        line += f" — {row['error']}"
    return "; ".join([line, *row["warnings"]])


def _test_accuracy(row: dict) -> str:
    if row["test_accuracy"] is None or not row.get("test_images"):
        return _percent(row["test_accuracy"])
    return accuracy_text(row["test_accuracy"], row["test_images"])


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# ---- reading the files ---------------------------------------------------------------------

# What reading a damaged run raises: a file that is not what we wrote, or a config this
# version does not know (an unknown backbone, a value out of range).
_DAMAGE = (DamagedFile, TransferLabError)


def _read_config(path: Path) -> TrainConfig:
    data = read_json_object(path)
    if data is None:
        raise DamagedFile(path, "missing")
    try:
        return TrainConfig.from_dict(data)
    except TransferLabError as exc:
        raise DamagedFile(path, str(exc)) from None


_STATUS_FIELDS = {"pid": int, "progress": dict, "best": dict, "saved_epoch": int,
                  "global_epoch": int, "total_epochs": int, "epoch": int, "error": str,
                  "stage": str, "created": (int, float), "view_bank": dict}


def _read_status(path: Path) -> dict:
    status = read_json_object(path)
    if status is None:
        raise DamagedFile(path, "missing")
    if status.get("state") not in RECORDED_STATES:
        raise DamagedFile(path, f"unknown state {status.get('state')!r}")
    for name, kind in _STATUS_FIELDS.items():
        value = status.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise DamagedFile(path, f"{name} is {value!r}")
    return status


def _read_audit(path: Path) -> dict | None:
    audit = read_json_object(path)
    if audit is not None and not isinstance(audit.get("phases"), list):
        raise DamagedFile(path, "unknown format (no list of phases)")
    return audit


_EVALUATION_FIELDS = ("split", "accuracy", "loss", "images", "classes", "confusion_matrix",
                      "per_class", "mistakes")


def _read_evaluation(path: Path) -> dict | None:
    evaluation = read_json_object(path)
    missing = [k for k in _EVALUATION_FIELDS if evaluation is not None and k not in evaluation]
    if missing:
        raise DamagedFile(path, f"unknown format (no {', '.join(missing)})")
    return evaluation


def _plain_number(value):
    """numpy's numbers as Python's (they would reach config.json as strings)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_epoch_record(record: dict) -> bool:
    """An epoch line as RunRecorder writes it: the numbers the curves and summaries use."""
    return (isinstance(record.get("global_epoch"), int) and isinstance(record.get("epoch"), int)
            and isinstance(record.get("phase_name"), str) and _is_number(record.get("seconds"))
            and all(record.get(k) is None or _is_number(record.get(k))
                    for k in ("loss", "accuracy", "val_loss", "val_accuracy")))


def whole_keras_archive(path: Path) -> bool:
    """Whether `path` is a complete .keras file: a zip whose directory (at its end, so a file
    cut short has none) lists the model's config and weights. Cheap: nothing is decompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "config.json" in names and "model.weights.h5" in names


def list_runs(workspace: str | Path) -> list[Run]:
    """Every run in the workspace, newest first; a damaged run is listed (and reads as
    damaged), never a reason to raise."""
    folder = paths.runs_dir(Path(workspace))
    runs = [Run(p) for p in folder.iterdir() if _holds_a_run(p)]
    return sorted(runs, key=_created, reverse=True)


def _holds_a_run(folder: Path) -> bool:
    try:
        return (folder / "config.json").exists()
    except OSError:  # unreadable: not ours to list
        return False


def _created(run: Run) -> float:
    try:
        return (run.folder / "config.json").stat().st_mtime
    except OSError:
        return 0.0


def find_run(workspace: str | Path, name_or_path: str) -> Run:
    """A run by its folder path or its name in the workspace."""
    candidate = Path(name_or_path)
    if not (candidate / "config.json").exists():
        candidate = paths.runs_dir(Path(workspace)) / name_or_path
    if not (candidate / "config.json").exists():
        raise RunError(f"No run {name_or_path!r}; `python -m transfer_core runs` lists them.")
    return Run(candidate)
