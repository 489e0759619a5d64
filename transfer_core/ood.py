"""The "none of these" check: how far a photo lies from the training photos in the base's
feature space, and the distance beyond which a run says it looks like none of its classes.

The score is the cosine distance from a photo's pooled base features (the base's output
averaged over space) to its nearest training photo's (Sun et al., "Out-of-Distribution
Detection with Deep Nearest Neighbors", 2022). On a cats-vs-dogs MobileNetV2 run it separated
200 flower photos from the 2,000 test photos with an AUROC of 0.997, where Mahalanobis distance
to the class means reached 0.853 (0.99 on L2-normalised features): docs/BENCHMARKS.md.
The threshold is the 97.5th percentile of the validation photos' scores (with the training
photos' scores against each other, for small splits): about 2.5% of photos
like the training ones are flagged, which keeps the false-alarm rate under 5% despite the
sampling noise of a percentile (at the 95th, test photos came out at 4.3-5.1%), while flagging
as many of the flowers (98.5%).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

from .storage import DamagedFile, write_bytes_atomic

PERCENTILE = 97.5
NEIGHBOURS = 1  # the k-th nearest training photo; 1, 5 and 10 measured alike (docs/BENCHMARKS.md)
FILE_NAME = "ood.npz"
FORMAT = 2  # 1: Mahalanobis statistics, read as missing and fitted again
_CHUNK = 512  # photos scored at once: bounds the (photos × training photos) similarity matrix


@dataclass
class OodStats:
    """Fitted statistics: the training photos' unit-length pooled features and the threshold
    on the score."""

    reference: np.ndarray  # (N, D) float16, each row of length 1
    neighbours: int
    threshold: float
    percentile: float
    model_stamp: int  # the model file's mtime_ns when fitted: a new model needs new statistics

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) cosine distances (0..2) to the k-th nearest training photo, for pooled
        features (N, D)."""
        reference = self.reference.astype("float32")
        k = min(self.neighbours, len(reference))
        out = []
        for start in range(0, len(features), _CHUNK):
            similarity = unit_rows(features[start:start + _CHUNK]) @ reference.T
            kth_similarity = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
            out.append(1.0 - kth_similarity)
        return np.concatenate(out).astype("float64") if out else np.zeros(0)

    def flags(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, out of distribution?) for pooled features."""
        scores = self.scores(features)
        return scores, scores > self.threshold

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, format=FORMAT, reference=self.reference, neighbours=self.neighbours,
                 threshold=self.threshold, percentile=self.percentile,
                 model_stamp=self.model_stamp)
        return out.getvalue()

    @classmethod
    def from_file(cls, path: str | Path) -> OodStats:
        """The statistics saved at `path`; DamagedFile when they do not read back whole."""
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {name: data[name] for name in data.files}
            if int(values.pop("format")) != FORMAT:
                raise DamagedFile(path, "written by another version")
            stats = cls(reference=values["reference"],
                        **{name: values[name].item() for name in
                           ("neighbours", "threshold", "percentile", "model_stamp")})
        except DamagedFile:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise DamagedFile(path, f"not a whole statistics file ({exc})") from None
        if not (stats.reference.ndim == 2 and len(stats.reference) and stats.neighbours >= 1
                and np.isfinite(stats.threshold)):
            raise DamagedFile(path, "its arrays do not fit together")
        return stats


def unit_rows(features) -> np.ndarray:
    """Each row scaled to length 1 (an all-zero row stays zero)."""
    x = np.asarray(features, dtype="float32")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit(train_features: np.ndarray, validation_features: np.ndarray,
        percentile: float = PERCENTILE, neighbours: int = NEIGHBOURS,
        model_stamp: int = 0) -> OodStats:
    """The training photos' features as the reference; the threshold from the scores of the
    validation photos (which the reference does not hold, as it will not hold a new photo)
    and of each training photo against the other training photos."""
    if not 0 < percentile < 100:
        raise ValueError(f"`percentile` must be between 0 and 100. Received: {percentile}")
    if neighbours < 1:
        raise ValueError(f"`neighbours` must be at least 1. Received: {neighbours}")
    stats = OodStats(unit_rows(train_features).astype("float16"), int(neighbours), 0.0,
                     float(percentile), int(model_stamp))
    # Each training photo scored against the others (its own row is its nearest neighbour)
    # adds samples to the percentile: with the 27 validation photos of the demo set alone, 12%
    # of new demo photos were flagged; with these too, 3%. On the 2,000 cats and dogs it moved
    # the test photos flagged from 2.65% to 2.75% (docs/BENCHMARKS.md).
    leave_one_out = OodStats(stats.reference, stats.neighbours + 1, 0.0, 0.0, 0).scores(
        train_features)
    held_out = np.r_[stats.scores(validation_features) if len(validation_features) else [],
                     leave_one_out]
    stats.threshold = float(np.percentile(held_out, percentile))
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

    A split's features come from the feature cache when training left them there and the
    base has not changed since (every strategy but fine_tune); otherwise
    `pooled_features(paths, progress)` computes them: the same function Predict uses on new
    photos, so the two are comparable.
    """
    stats = load_stats(run)
    if stats is not None:
        return stats
    from .datasets import load_manifest
    from .inputs import check_split_files

    manifest = load_manifest(run.config.manifest)
    paths, labels = manifest.files("train")
    validation, validation_labels = manifest.files("validation")
    check_split_files(paths + validation, "training or validation")
    total = len(paths) + len(validation)
    train = _cached_pooled(run, paths, labels)
    if train is None:
        train = pooled_features(paths, _part(progress, 0, total))
    held = _cached_pooled(run, validation, validation_labels) if validation else None
    if held is None:
        held = (pooled_features(validation, _part(progress, len(paths), total))
                if validation else np.zeros((0, train.shape[1])))
    stats = fit(train, held, model_stamp=_model_stamp(run))
    write_bytes_atomic(stats_path(run), stats.to_bytes())
    return stats


def _cached_pooled(run, paths: list[str], labels: list[int]) -> np.ndarray | None:
    """The pooled base features of a split from the feature cache, or None when it does not
    hold them (another workspace, a cleared cache) or they are stale (a fine-tuned base)."""
    if run.config.strategy == "fine_tune" or not paths:
        return None
    from . import config
    from .feature_rows import pooled
    from .features import FeatureCache
    from .training import feature_spec

    workspace = Path(run.folder).parent.parent  # runs live in <workspace>/runs/<name>
    if not (config.cache_dir(workspace) / "features").is_dir():
        return None
    cache = FeatureCache(workspace)
    cached = cache.load(cache.key(paths, labels, feature_spec(run.config).resolved()), paths)
    if cached is None or cached.features.ndim != 4 or len(cached.features) != len(paths):
        return None
    return pooled(cached.features)  # in chunks: the split's maps are never in memory whole


def _part(progress, offset: int, total: int):
    if progress is None:
        return None
    return lambda done, _count: progress(offset + done, total)


def _model_stamp(run) -> int:
    try:
        return run.model_path.stat().st_mtime_ns
    except OSError:
        return -1
