"""A training run is a folder: the only channel between the process that trains and the pages
that show it, so a run survives reruns, page switches, closed tabs and a second browser.

config.json    everything needed to repeat the run (TrainConfig)
status.json    queued / running / finished / failed / stopped, phase, epoch, progress, error
metrics.jsonl  one line per epoch and phase, and a progress line every few batches
model.keras    the best epoch so far (by the configured monitor)
audit.json     the freeze audit: what was trainable in each phase, and proof the rest was not
evaluation.json  test-split results, written by `evaluate`
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import config as paths
from .augment import CHAPTER, AugmentationSettings
from .backbones import BACKBONES, get_backbone
from .datasets import load_manifest
from .errors import RunError
from .history import best_epoch
from .storage import append_jsonl, read_json, read_jsonl, write_json_atomic

STRATEGIES = ("feature_extraction", "feature_extraction_augmented", "fine_tune")
MONITORS = ("val_loss", "val_accuracy")


@dataclass
class TrainConfig:
    """A run's settings; the defaults are the chapter's (RMSprop 2e-5, batch 20, 30 epochs,
    fine-tuning from the backbone's top block at 1e-5 for 100 more epochs)."""

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
    dense_units: int = 256
    dropout: float = 0.5
    monitor: str = "val_loss"
    early_stopping_patience: int | None = None
    seed: int = 1337
    # Augmented views per training image, computed once through the frozen part of the base
    # (0: augment on the fly and run the whole base every epoch, the chapter's way).
    view_bank: int = 0
    augmentation: dict = field(default_factory=CHAPTER.to_dict)
    classes: list[str] = field(default_factory=list)  # filled from the manifest

    def __post_init__(self):
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
            (self.preprocessing in ("backbone", "rescale"), "preprocessing", "backbone or rescale"),
            (self.pooling in ("flatten", "avg"), "pooling", "flatten or avg"),
            (self.dense_units >= 1, "dense_units", "at least 1"),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
            (self.monitor in MONITORS, "monitor", f"one of {', '.join(MONITORS)}"),
            (0 <= self.view_bank <= 100, "view_bank", "between 0 and 100"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             "early_stopping_patience", "at least 1 (or unset)"),
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

    @property
    def phases(self) -> list[str]:
        return ["head", "fine_tune"] if self.strategy == "fine_tune" else ["head"]

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.fine_tune_epochs if self.strategy == "fine_tune" else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Run:
    """One run folder and the typed reads and writes of its files."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "config.json").exists():
            raise RunError(f"{self.folder} is not a training run (no config.json).")

    @classmethod
    def create(cls, workspace: str | Path, config: TrainConfig, name: str | None = None) -> "Run":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{config.backbone}-{config.strategy}"
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base)
        folder = paths.runs_dir(Path(workspace)) / base
        suffix = 1
        while folder.exists():
            suffix += 1
            folder = folder.with_name(f"{base}-{suffix}")
        return cls.create_in(folder, config)

    @classmethod
    def create_in(cls, folder: str | Path, config: TrainConfig) -> "Run":
        folder = Path(folder)
        if (folder / "config.json").exists():
            raise RunError(f"{folder} already holds a run; choose another folder.")
        if not config.classes:
            config.classes = load_manifest(config.manifest).classes
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "config.json", config.to_dict())
        write_json_atomic(folder / "status.json", {"state": "queued", "created": time.time()})
        return cls(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(read_json(self.folder / "config.json"))

    @property
    def model_path(self) -> Path:
        return self.folder / "model.keras"

    @property
    def stop_path(self) -> Path:
        return self.folder / "stop"

    @property
    def log_path(self) -> Path:
        return self.folder / "log.txt"

    def status(self) -> dict:
        """The recorded status; a 'running' run whose process is gone reads as failed."""
        status = read_json(self.folder / "status.json", {}) or {}
        if status.get("state") in ("running", "queued") and not _alive(status.get("pid")):
            if status.get("pid"):  # a worker was started and is gone without a final word
                status = {**status, "state": "failed",
                          "error": "The training process ended unexpectedly"
                                   f" (see {self.log_path.name})."}
        return status

    def update_status(self, **changes) -> dict:
        status = read_json(self.folder / "status.json", {}) or {}
        status.update(changes, updated=time.time())
        write_json_atomic(self.folder / "status.json", status)
        return status

    def metrics(self) -> list[dict]:
        return read_jsonl(self.folder / "metrics.jsonl")

    def epochs(self) -> list[dict]:
        return [r for r in self.metrics() if r.get("type") == "epoch"]

    def log_metric(self, record: dict) -> None:
        append_jsonl(self.folder / "metrics.jsonl", {**record, "time": time.time()})

    def request_stop(self) -> None:
        self.stop_path.write_text(str(time.time()))

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def audit(self) -> dict | None:
        return read_json(self.folder / "audit.json")

    def write_audit(self, audit: dict) -> None:
        write_json_atomic(self.folder / "audit.json", audit)

    def evaluation(self) -> dict | None:
        return read_json(self.folder / "evaluation.json")

    def summary(self) -> dict:
        """One row for `runs` and the app's run pickers."""
        config, status, epochs = self.config, self.status(), self.epochs()
        best = best_epoch(epochs, config.monitor)
        evaluation = self.evaluation() or {}
        return {"name": self.name, "folder": str(self.folder), "state": status.get("state"),
                "backbone": config.backbone, "strategy": config.strategy,
                "weights": config.weights, "epochs_done": len(epochs),
                "epochs_total": config.total_epochs,
                "best_val_accuracy": best.get("val_accuracy") if best else None,
                "best_val_loss": best.get("val_loss") if best else None,
                "test_accuracy": evaluation.get("accuracy"), "created": status.get("created"),
                "error": status.get("error")}


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (finished, not yet reaped by the app that started it) is not alive.
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def list_runs(workspace: str | Path) -> list[Run]:
    """Every run in the workspace, newest first."""
    folder = paths.runs_dir(Path(workspace))
    runs = [Run(p) for p in folder.iterdir() if (p / "config.json").exists()]
    return sorted(runs, key=lambda r: (r.folder / "config.json").stat().st_mtime, reverse=True)


def find_run(workspace: str | Path, name_or_path: str) -> Run:
    """A run by its folder path or its name in the workspace."""
    candidate = Path(name_or_path)
    if not (candidate / "config.json").exists():
        candidate = paths.runs_dir(Path(workspace)) / name_or_path
    if not (candidate / "config.json").exists():
        raise RunError(f"No run {name_or_path!r}; `python -m transfer_core runs` lists them.")
    return Run(candidate)
