"""The "none of these" check: how far a photo lies from the training photos in the base's
feature space, and the distance beyond which a run says it looks like none of its classes.

The score is the Mahalanobis distance to the nearest class mean (Lee et al., "A Simple Unified
Framework for Detecting Out-of-Distribution Samples", 2018) on the base's output averaged over
space, with one covariance shared by the classes. The covariance is kept as its top principal
directions plus one variance for the rest (probabilistic PCA), so the fitted statistics are a
few hundred kilobytes instead of a full D×D matrix, and stay well conditioned on small splits.
The threshold is the 95th percentile of the validation photos' scores: about 5% of photos like
the training ones are flagged, a false-alarm rate a user can live with, while photos of other
things lie far beyond it (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .storage import DamagedFile, write_bytes_atomic

PERCENTILE = 95.0
COMPONENTS = 64  # principal directions kept; the rest share one variance
FILE_NAME = "ood.npz"
FORMAT = 1


@dataclass
class OodStats:
    """Fitted statistics: class means, the shared covariance in principal directions, and the
    threshold on the score."""

    means: np.ndarray  # (classes, D)
    components: np.ndarray  # (D, k) orthonormal directions
    variances: np.ndarray  # (k,) the covariance along each
    residual_variance: float  # the mean variance in every other direction
    threshold: float
    percentile: float
    model_stamp: int  # the model file's mtime_ns when fitted: a new model needs new statistics

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) distances to the nearest class mean, for pooled features (N, D)."""
        features = np.asarray(features, dtype="float64")
        best = np.full(len(features), np.inf)
        for mean in self.means:
            offset = features - mean
            along = offset @ self.components
            rest = np.maximum((offset ** 2).sum(axis=1) - (along ** 2).sum(axis=1), 0.0)
            squared = (along ** 2 / self.variances).sum(axis=1) + rest / self.residual_variance
            best = np.minimum(best, squared)
        return np.sqrt(best)

    def flags(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, out of distribution?) for pooled features."""
        scores = self.scores(features)
        return scores, scores > self.threshold

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, format=FORMAT, means=self.means, components=self.components,
                 variances=self.variances, residual_variance=self.residual_variance,
                 threshold=self.threshold, percentile=self.percentile,
                 model_stamp=self.model_stamp)
        return out.getvalue()

    @classmethod
    def from_file(cls, path: str | Path) -> "OodStats":
        """The statistics saved at `path`; DamagedFile when they do not read back whole."""
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {name: data[name] for name in data.files}
            if int(values.pop("format")) != FORMAT:
                raise DamagedFile(path, "written by another version")
            stats = cls(means=values["means"], components=values["components"],
                        variances=values["variances"],
                        **{name: _scalar(values[name]) for name in
                           ("residual_variance", "threshold", "percentile", "model_stamp")})
        except DamagedFile:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise DamagedFile(path, f"not a whole statistics file ({exc})") from None
        stats._check(path)
        return stats

    def _check(self, path) -> None:
        k = self.variances.shape[0] if self.variances.ndim == 1 else -1
        sound = (self.means.ndim == 2 and self.components.shape == (self.means.shape[1], k)
                 and np.all(self.variances > 0) and self.residual_variance > 0
                 and np.isfinite(self.threshold))
        if not sound:
            raise DamagedFile(path, "its arrays do not fit together")


def _scalar(value: np.ndarray):
    return value.item()


def fit(train_features: np.ndarray, train_labels: np.ndarray, validation_features: np.ndarray,
        percentile: float = PERCENTILE, components: int = COMPONENTS,
        model_stamp: int = 0) -> OodStats:
    """Class means and shared covariance from the training features, the threshold from the
    validation features (photos the fit never saw, as a new photo will be)."""
    if not 0 < percentile < 100:
        raise ValueError(f"`percentile` must be between 0 and 100. Received: {percentile}")
    x = np.asarray(train_features, dtype="float64")
    labels = np.asarray(train_labels)
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    dof = max(len(x) - len(classes), 1)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    variances = singular ** 2 / dof
    k = int(min(components, np.count_nonzero(variances > variances[0] * 1e-9)))
    total = (centred ** 2).sum() / dof
    rest_dims = max(x.shape[1] - k, 1)
    floor = variances[0] * 1e-6  # a base whose features span fewer directions than D
    residual = max((total - variances[:k].sum()) / rest_dims, floor)
    stats = OodStats(means, directions[:k].T.copy(), np.maximum(variances[:k], floor),
                     float(residual), 0.0, float(percentile), int(model_stamp))
    held_out = validation_features if len(validation_features) else train_features
    stats.threshold = float(np.percentile(stats.scores(held_out), percentile))
    return stats


# --- a run's statistics ----------------------------------------------------------------------

def stats_path(run) -> Path:
    return Path(run.folder) / FILE_NAME


def load_stats(run) -> OodStats | None:
    """The run's saved statistics when they are current for its model; None when there are
    none, they were fitted to another model, or the file is damaged (with a warning: the
    caller computes them again)."""
    path = stats_path(run)
    if not path.exists():
        return None
    try:
        stats = OodStats.from_file(path)
    except DamagedFile as exc:
        warnings.warn(f"The 'none of these' statistics of run {Path(run.folder).name} are "
                      f"damaged ({exc.why}); computing them again.", stacklevel=2)
        return None
    return stats if stats.model_stamp == _model_stamp(run) else None


def run_stats(run, pooled_features: Callable, progress: Callable | None = None) -> OodStats:
    """The run's statistics, fitted and saved (atomically) when missing or out of date.

    `pooled_features(paths, progress)` gives the pooled base features of image files: the
    same function Predict uses on new photos, so the two are comparable.
    """
    stats = load_stats(run)
    if stats is not None:
        return stats
    from .datasets import load_manifest
    from .inputs import check_split_files

    manifest = load_manifest(run.config.manifest)
    paths, labels = manifest.files("train")
    validation, _ = manifest.files("validation")
    check_split_files(paths + validation, "training or validation")
    train = pooled_features(paths, _part(progress, 0, len(paths) + len(validation)))
    held = (pooled_features(validation, _part(progress, len(paths), len(paths) + len(validation)))
            if validation else np.zeros((0, train.shape[1])))
    stats = fit(train, np.asarray(labels), held, model_stamp=_model_stamp(run))
    write_bytes_atomic(stats_path(run), stats.to_bytes())
    return stats


def _part(progress, offset: int, total: int):
    if progress is None:
        return None
    return lambda done, _count: progress(offset + done, total)


def _model_stamp(run) -> int:
    try:
        return run.model_path.stat().st_mtime_ns
    except OSError:
        return -1
