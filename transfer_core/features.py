"""Fast feature extraction (the chapter's method 1) and its on-disk cache.

The conv base runs once over a split; its outputs are written batch by batch to a .npy file
under the workspace, keyed by everything that changes them (the files with size and mtime,
backbone, weights, input size, preprocessing, precision, the views of a view bank, and the
dtype they are stored in: float16 for a view bank, float32 for plain features). A
second request with the same key memory-maps the file without building a model; any change is a
miss.
Features can also be derived from features cut lower in the base (`Derivation`): the same
function, without decoding or re-running the layers below the cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from . import config
from .augment import CHAPTER, AugmentationSettings, augmentation_layers
from .backbones import build_base, get_backbone, preprocess_mode, weights_id
from .datasets import Manifest
from .device import configure
from .errors import DatasetError, ImageError, Stopped
from .inputs import inference_batches
from .precision import building_in
from .layers import Preprocess
from .storage import (StorageError, remove_stale_temps, temp_prefix, write_failure,
                      write_json_atomic)

# Part of every cache key; 2: large JPEGs decode in draft mode (images.py), so their pixels
# changed and features cached before must not be reused.
FORMAT = 2


@dataclass(frozen=True)
class FeatureSpec:
    """What determines the features, apart from the images themselves.

    `views` > 0 makes an augmented view bank: K randomly augmented versions of every image
    (seeded, so repeatable), row v*N + i holding view v of image i. `layer` cuts the base at
    that layer's output (the frozen prefix that fine-tuning leaves fixed).
    """

    backbone: str = "vgg16"
    weights: str = "imagenet"
    image_size: int | None = None  # None: the backbone's default
    preprocessing: str = "backbone"  # or "rescale", the chapter's 1/255
    seed: int = 1337  # random initialisation with weights == "none", and the views' draws
    views: int = 0
    augmentation: tuple = ()  # AugmentationSettings items, when views > 0
    layer: str | None = None
    # The base's arithmetic, "float32" or "bfloat16" ("auto" is resolved before: precision.py);
    # how the features are stored is `storage`, apart from it.
    precision: str = "float32"

    @property
    def storage(self) -> str:
        """The dtype of the stored features: float16 for a view bank (half the disk and reads
        of float32; readers cast batches back to float32 before a model sees them)."""
        return storage_dtype(self.views)

    def resolved(self) -> FeatureSpec:
        size = self.image_size or get_backbone(self.backbone).default_size
        augmentation = self.augmentation or (tuple(CHAPTER.to_dict().items()) if self.views else ())
        return replace(self, image_size=size, augmentation=tuple(augmentation))

    def cache_identity(self) -> dict:
        spec = self.resolved()
        identity = asdict(spec)
        identity["weights"] = weights_id(get_backbone(spec.backbone), spec.weights, spec.image_size)
        identity["augmentation"] = [list(item) for item in spec.augmentation]
        if spec.weights != "none" and not spec.views:
            identity.pop("seed")
        if spec.precision == "float32":
            identity.pop("precision")  # the keys of float32 sets cached before it existed
        if spec.storage != "float32":  # float32 sets keep the keys they had before float16
            identity["storage"] = spec.storage
        return identity


def storage_dtype(views: int) -> str:
    """How a feature set with `views` augmented views per image is stored (0: plain features).
    float16 halves a bank's disk and reads; rounding to it changed no test prediction of the
    chapter's head (docs/BENCHMARKS.md, "Features stored in float16")."""
    return "float16" if views else "float32"


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, h, w, c) float32 or float16 (a view bank), memory-mapped
    labels: np.ndarray  # (N,) int32
    paths: list[str]
    key: str
    folder: Path
    hit: bool
    seconds: float
    images_per_second: float | None  # of the extraction itself; None on a cache hit
    # The same after the first batch, whose time is mostly tracing the model.
    steady_images_per_second: float | None = None

    def summary(self) -> dict:
        return {"key": self.key, "cache": "hit" if self.hit else "miss", "images": len(self.labels),
                "feature_shape": list(self.features.shape[1:]), "seconds": round(self.seconds, 3),
                "images_per_second": (round(self.images_per_second, 2)
                                      if self.images_per_second else None),
                "folder": str(self.folder)}


@dataclass
class Derivation:
    """Where to compute features from instead of the photos: `source`, the same images and
    views cut lower in the base, through `layers`, the frozen layers from that cut up."""

    source: FeatureSet
    layers: keras.Model


def file_fingerprints(paths: list[str]) -> list[list]:
    """(path, size, mtime) per file: changes when a file is replaced or edited."""
    out = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise DatasetError(f"{path} is in the manifest but no longer exists; scan and "
                               "split the folder again.") from None
        out.append([path, stat.st_size, stat.st_mtime_ns])
    return out


class FeatureCache:
    """Cached conv-base outputs under `workspace/cache/features/<key>/`."""

    def __init__(self, workspace: str | Path):
        self.root = config.cache_dir(Path(workspace)) / "features"
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.root)  # what extractions killed midway left behind

    def key(self, paths: list[str], labels: list[int], spec: FeatureSpec) -> str:
        blob = json.dumps({"format": FORMAT, "spec": spec.cache_identity(),
                           "files": file_fingerprints(paths), "labels": list(labels)})
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def has(self, manifest: Manifest, split: str, spec: FeatureSpec) -> bool:
        """Whether a split's features for `spec` are cached, without reading them."""
        paths, labels = manifest.files(split)
        return (self.root / self.key(paths, labels, spec.resolved()) / "meta.json").exists()

    def load(self, key: str, paths: list[str]) -> FeatureSet | None:
        folder = self.root / key
        if not (folder / "meta.json").exists():
            return None
        started = time.perf_counter()
        try:
            features = np.load(folder / "features.npy", mmap_mode="r")
            labels = np.load(folder / "labels.npy")
        except (OSError, ValueError):  # damaged since it was written whole: compute it again
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return FeatureSet(features, labels, paths, key, folder, True,
                          time.perf_counter() - started, None)

    def extract(self, manifest: Manifest, split: str, spec: FeatureSpec, batch_size: int = 32,
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                derivation: Derivation | None = None) -> FeatureSet:
        """Features of one split: from the cache when possible, else computed and stored,
        from the photos or, with `derivation`, from lower features of the same views."""
        paths, labels = manifest.files(split)
        if not paths:
            raise DatasetError(f"The {split} split of {manifest.path or 'this manifest'} is empty.")
        spec = spec.resolved()
        key = self.key(paths, labels, spec)
        cached = self.load(key, paths)
        if cached is not None:
            if progress:
                progress(len(paths), len(paths))
            return cached
        shape, compute = _producer(paths, spec, batch_size, progress, should_stop, derivation)
        source = derivation.source.key if derivation else None
        return self._compute(key, paths, labels, spec, shape, compute, source)

    def _compute(self, key, paths, labels, spec, shape, compute, source) -> FeatureSet:
        started = time.perf_counter()
        # A folder of its own per extraction: two sessions on the same key never collide. The
        # pid in its name lets the next start remove it if this process is killed.
        partial = Path(tempfile.mkdtemp(dir=self.root, prefix=temp_prefix(f"{key}.partial")))
        try:
            check_disk(partial, shape, spec.storage)
            with NpyWriter(partial / "features.npy", shape, spec.storage) as features:
                speed = compute(features)
            with writing_cache(partial):
                np.save(partial / "labels.npy", np.asarray(labels, dtype="int32"))
                write_json_atomic(partial / "meta.json", {
                    "key": key, "spec": spec.cache_identity(), "images": len(paths),
                    "views": spec.views, "storage": spec.storage, "derived_from": source,
                    "feature_shape": list(shape[1:]), "created": time.time(),
                    "images_per_second": speed.images_per_second,
                    "steady_images_per_second": speed.steady_images_per_second})
            try:
                os.rename(partial, self.root / key)
            except OSError:  # another session finished the same key first: same content
                shutil.rmtree(partial, ignore_errors=True)
        except BaseException:  # a full disk, a stop, a bug: no partial set is left behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        result = self.load(key, paths)
        result.hit, result.seconds = False, time.perf_counter() - started
        result.images_per_second = speed.images_per_second
        result.steady_images_per_second = speed.steady_images_per_second
        return result

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def clear(self) -> int:
        """Delete every cached feature set; returns the bytes freed."""
        freed = self.size_bytes()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        return freed


def _producer(paths, spec, batch_size, progress, should_stop, derivation):
    """(shape of the feature set, a function that writes it into an NpyWriter)."""
    if derivation is not None:
        model, rows = derivation.layers, derivation.source.features

        def compute(out):
            return run_layers(model, rows, batch_size, out, progress, should_stop)
    else:
        model = build_extractor(spec)

        def compute(out):
            return run_extractor(model, paths, spec.image_size, batch_size, out, progress,
                                 should_stop, augmentation=view_augmentation(spec))
    return (len(paths) * max(spec.views, 1), *model.output.shape[1:]), compute


def build_extractor(spec: FeatureSpec):
    """uint8 RGB images in, conv-base features out (the base in inference mode)."""
    configure()
    spec = spec.resolved()
    backbone = get_backbone(spec.backbone)
    if spec.weights == "none":
        keras.utils.set_random_seed(spec.seed)
    with building_in(spec.precision):  # the base only: its output is cast back to float32
        base = build_base(backbone, spec.weights, spec.image_size)
    if spec.layer:
        base = keras.Model(base.inputs, base.get_layer(spec.layer).output, name="prefix")
    inputs = keras.Input((spec.image_size, spec.image_size, 3), name="image")
    x = Preprocess(preprocess_mode(backbone, spec.preprocessing), name="preprocess")(inputs)
    outputs = keras.layers.Activation("linear", dtype="float32", name="features")(
        base(x, training=False))
    return keras.Model(inputs, outputs, name=f"{backbone.name}_extractor")


def view_augmentation(spec: FeatureSpec):
    """The seeded augmentation that draws the views, or None for plain features."""
    if not spec.views:
        return None
    return augmentation_layers(AugmentationSettings(**dict(spec.augmentation)), seed=spec.seed)


def bank_bytes(images: int, views: int, feature_shape) -> int:
    """Disk use of a feature set (stored as `storage_dtype(views)`), to show before it is
    built."""
    itemsize = np.dtype(storage_dtype(views)).itemsize
    return itemsize * images * max(views, 1) * int(np.prod(feature_shape))


def view_bank_bytes(layer_shapes: dict, cut: str | None, output: str, views: int,
                    n_train: int, n_val: int) -> dict[str, int]:
    """Disk use of what a view-bank run caches, by part, to show before it is built: every
    view of the training images and the validation images, at the prefix's `cut` (None: at
    the base's `output`); with a cut, also both at the base's output, for the head phase."""
    parts = {"training views": bank_bytes(n_train, views, layer_shapes[cut or output]),
             "validation": bank_bytes(n_val, 0, layer_shapes[cut or output])}
    if cut:
        parts["head phase"] = (bank_bytes(n_train, views, layer_shapes[output])
                               + bank_bytes(n_val, 0, layer_shapes[output]))
    return parts


def cache_limit_bytes() -> float:
    """The most one feature set may take (TRANSFER_LAB_CACHE_LIMIT_GB, default 50)."""
    return float(os.environ.get("TRANSFER_LAB_CACHE_LIMIT_GB", "50")) * 2**30


def room_for_features(folder: Path) -> float:
    """The bytes a new feature set may take in `folder`: under the cache limit, and leaving a
    tenth of the free disk."""
    return min(cache_limit_bytes(), shutil.disk_usage(folder).free * 0.9)


def check_disk(folder: Path, shape, dtype: str = "float32") -> None:
    """Refuse a feature set that would not fit: the cache limit, or the free disk space."""
    needed = np.dtype(dtype).itemsize * int(np.prod(shape))
    limit = cache_limit_bytes()
    if needed > room_for_features(folder):
        raise DatasetError(
            f"These features need {needed / 2**30:.1f} GB of disk, more than "
            f"{'the cache limit (TRANSFER_LAB_CACHE_LIMIT_GB)' if needed > limit else 'is free'}. "
            "Use fewer augmented views, a smaller image size, or clear the feature cache "
            "(`python -m transfer_core cache --clear`, or the Train page).")


@contextlib.contextmanager
def writing_cache(folder: Path):
    """A failed write into the cache (a full disk) as StorageError: where, why, space free."""
    try:
        yield
    except OSError as exc:
        raise StorageError(write_failure(exc, folder.parent, "writing the feature cache")) \
            from exc


class NpyWriter:
    """Writes a .npy file of `dtype` batch by batch, in order. Plain writes, not a memory map:
    the written pages stay in the page cache, not in the process's memory, so memory stays
    flat however many images there are."""

    def __init__(self, path: Path, shape: tuple, dtype: str = "float32"):
        self.path, self.shape, self.rows = Path(path), tuple(int(n) for n in shape), 0
        self.dtype = np.dtype(dtype)

    def __enter__(self):
        with writing_cache(self.path.parent):
            self.handle = open(self.path, "wb")
            np.lib.format.write_array_header_1_0(self.handle, {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False, "shape": self.shape})
        return self

    def __len__(self):
        return self.shape[0]

    def append(self, batch: np.ndarray) -> None:
        with writing_cache(self.path.parent):
            self.handle.write(np.ascontiguousarray(batch, dtype=self.dtype).tobytes())
        self.rows += len(batch)

    def __exit__(self, kind, *rest):
        try:
            with writing_cache(self.path.parent):
                self.handle.close()  # flushes the last buffered rows: may find the disk full
        except StorageError:
            if kind is None:
                raise
            return  # the first failure is the one to report
        if kind is None and self.rows != self.shape[0]:
            raise RuntimeError(f"wrote {self.rows} rows of {self.shape[0]} to {self.path}")


@dataclass
class ExtractionSpeed:
    images: int
    seconds: float
    first_batch_images: int
    first_batch_seconds: float  # mostly tracing the model

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    @property
    def steady_images_per_second(self) -> float | None:
        rest = self.images - self.first_batch_images
        return rest / max(self.seconds - self.first_batch_seconds, 1e-9) if rest else None


def run_extractor(extractor, paths: list[str], image_size: int, batch_size: int,
                  out: NpyWriter, progress=None, should_stop=None,
                  augmentation=None) -> ExtractionSpeed:
    """Append the extractor's outputs for `paths` to `out`, in order; returns how fast.

    With `augmentation`, `out` takes len(out) // len(paths) views: view v of image i at row
    v * len(paths) + i, each view one pass of the seeded augmentation over all images.
    """
    def apply(x):
        x = keras.ops.cast(x, "float32")
        if augmentation is not None:
            x = augmentation(x, training=True)
        return extractor(x, training=False)

    # One signature for every batch: the last, smaller batch must not trace the model again.
    signature = tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)
    forward = tf.function(apply, input_signature=[signature])
    views, total = len(out) // len(paths), len(out)
    started, done, first = time.perf_counter(), 0, None
    try:
        for _view in range(views):
            for batch in inference_batches(paths, image_size, batch_size):
                if should_stop and should_stop():
                    raise Stopped()
                result = forward(batch).numpy()
                out.append(result)
                done += len(result)
                first = first or (done, time.perf_counter() - started)
                if progress:
                    progress(done, total)
    except ImageError as exc:
        raise ImageError(f"{exc}. The file changed after the folder was checked; scan and "
                         "split the folder again.") from None
    return ExtractionSpeed(done, time.perf_counter() - started, *first)


def run_layers(layers, rows: np.ndarray, batch_size: int, out: NpyWriter, progress=None,
               should_stop=None) -> ExtractionSpeed:
    """Append `layers`' outputs (inference mode) for every row of `rows` to `out`, in order."""
    signature = tf.TensorSpec((None, *rows.shape[1:]), tf.float32)
    forward = tf.function(lambda x: layers(x, training=False), input_signature=[signature])
    started, first = time.perf_counter(), None
    for start in range(0, len(rows), batch_size):
        if should_stop and should_stop():
            raise Stopped()
        out.append(forward(np.asarray(rows[start:start + batch_size], "float32")).numpy())
        first = first or (out.rows, time.perf_counter() - started)
        if progress:
            progress(out.rows, len(rows))
    return ExtractionSpeed(out.rows, time.perf_counter() - started, *first)
