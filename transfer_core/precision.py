"""bfloat16 for the conv base where the CPU computes it natively, and the "auto" choice.

CPUs with AVX512_BF16 or AMX run VGG16's convolutions about twice as fast in bfloat16; on
others (and for depthwise convolutions) it is slower. "auto" measures both once per backbone,
size, weights and machine, and picks bfloat16 only when it is faster AND gives the same
predictions as float32 on a check set: per-feature closeness is the wrong gate, as features
can move a little while every decision stays the same (docs/BENCHMARKS.md, "bfloat16").
The head always trains and predicts in float32; cached features are stored as float32.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("auto", "float32", "bfloat16")
# The CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# "auto" takes bfloat16 only when it is at least this much faster (a margin over the noise of
# a short measurement on a shared machine) ...
MIN_SPEEDUP = 1.15
# ... and when a nearest-class-mean classifier fitted on the float32 features of the check set
# labels at least this share of it the same from the bfloat16 features ...
MIN_AGREEMENT = 0.98
# ... and is at most this much less accurate with them (a share, 0.01 = one point).
MAX_ACCURACY_DROP = 0.01
CHECK_IMAGES = 64  # per check: drawn from the training split, spread over the classes


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    return bool(set(BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def check_precision(value: str, name: str = "precision") -> str:
    from .errors import RunError

    if value not in PRECISIONS:
        raise RunError(f"`{name}` must be one of {', '.join(PRECISIONS)}. "
                       f"Received: {name}={value!r}")
    return value


def policy_name(precision: str) -> str:
    """The Keras dtype policy of a base in `precision`: variables stay float32 either way."""
    return "mixed_bfloat16" if precision == "bfloat16" else "float32"


@contextlib.contextmanager
def building_in(precision: str):
    """Layers created inside take `precision`'s dtype policy; the policy before is restored
    after, so a head built later stays float32. Keras reads the global policy when a layer is
    created, and keras.applications' constructors take no dtype of their own."""
    import keras

    before = keras.config.dtype_policy()
    if precision == "bfloat16":
        keras.config.set_dtype_policy(policy_name(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def computes_in_bfloat16(model) -> bool:
    """Whether any layer of `model` (nested models included) computes in bfloat16."""
    return any(layer.dtype_policy.compute_dtype == "bfloat16"
               for layer in model._flatten_layers(include_self=False, recursive=True))


def in_float32(model):
    """The same model, weights and all, computing in float32 everywhere: for a CPU without
    native bfloat16 (where bfloat16 is slow) and for exports (TFLite has no bfloat16
    convolutions). The variables are float32 under either policy, so they copy over as they are.
    """
    import keras

    if not computes_in_bfloat16(model):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _float32_policies(node):
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_policies(value) for value in node]
    return node


def resolve(precision: str, backbone: str, weights: str, image_size: int,
            check_set=None, workspace=None, flags: set[str] | None = None) -> dict:
    """The precision to use and why: {"precision", "asked", "reason", ...measurements}.

    "auto" on a CPU without bfloat16, or with random weights, gives float32 at once, measuring
    nothing. Otherwise both
    are measured on `check_set` ((paths, labels) from the training split): speed of the base
    and agreement of the predictions; remembered in the workspace's cache when given.
    """
    check_precision(precision)
    if precision != "auto":
        return {"precision": precision, "asked": precision, "reason": "chosen"}
    if not cpu_has_bf16(flags):
        return {"precision": "float32", "asked": "auto",
                "reason": "this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag)"}
    if weights == "none":  # tests and timing: a random base's labels say nothing to check
        return {"precision": "float32", "asked": "auto",
                "reason": "random weights (none): no predictions to check bfloat16 against"}
    if _gpu():
        return {"precision": "float32", "asked": "auto",
                "reason": "a GPU is used (mixed float16 there, not bfloat16)"}
    key = _key(backbone, weights, image_size)
    known = _remembered(workspace).get(key)
    if not isinstance(known, dict):
        known = compare(backbone, weights, image_size, check_set)
        _remember(workspace, key, known)
    return {**known, "asked": "auto"}


def compare(backbone: str, weights: str, image_size: int, check_set) -> dict:
    """Measure float32 and bfloat16 on the check set and decide (the thresholds above)."""
    paths, labels = check_set
    started = time.perf_counter()
    runs = {p: _features(backbone, weights, image_size, paths, p) for p in PRECISIONS[1:]}
    rates = {p: run[1] for p, run in runs.items()}
    quality = prediction_agreement(runs["float32"][0], runs["bfloat16"][0], np.asarray(labels))
    speedup = rates["bfloat16"] / rates["float32"]
    faster = speedup >= MIN_SPEEDUP
    agrees = (quality["agreement"] >= MIN_AGREEMENT
              and quality["accuracy_bfloat16"] >= quality["accuracy_float32"] - MAX_ACCURACY_DROP)
    if faster and agrees:
        chosen, reason = "bfloat16", f"{speedup:.2f}× faster, same predictions"
    elif not faster:
        chosen, reason = "float32", f"bfloat16 is not faster here ({speedup:.2f}×)"
    else:
        chosen, reason = "float32", (f"bfloat16 changed predictions (agreement "
                                     f"{quality['agreement']:.1%})")
    return {"precision": chosen, "reason": reason, "speedup": round(speedup, 3),
            "images_per_second": {p: round(r, 1) for p, r in rates.items()},
            "check_images": len(paths), **{k: round(v, 4) for k, v in quality.items()},
            "seconds": round(time.perf_counter() - started, 2)}


def prediction_agreement(reference: np.ndarray, other: np.ndarray, labels: np.ndarray) -> dict:
    """Fit a nearest-class-mean classifier on `reference` (the float32 features, averaged over
    their positions) and label both sets with it: how often the labels agree, and each's
    accuracy. A decision-level check: what the head will see, not each number's error."""
    from .feature_rows import pooled  # keras: not at import time (runs.py imports this module)

    ref, oth = pooled(reference), pooled(other)
    classes = np.unique(labels)
    means = np.stack([ref[labels == c].mean(axis=0) for c in classes])

    def predict(x):
        distances = ((x[:, None, :] - means[None]) ** 2).sum(axis=-1)
        return classes[distances.argmin(axis=1)]

    ref_labels, oth_labels = predict(ref), predict(oth)
    return {"agreement": float(np.mean(ref_labels == oth_labels)),
            "accuracy_float32": float(np.mean(ref_labels == labels)),
            "accuracy_bfloat16": float(np.mean(oth_labels == labels))}


def check_set(paths: list[str], labels: list[int], size: int = CHECK_IMAGES, seed: int = 0):
    """Up to `size` images of the training split, the same share of each class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    order = rng.permutation(len(labels))
    per_class = max(1, size // max(len(np.unique(labels)), 1))
    chosen = np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels)])
    chosen.sort()
    return [paths[i] for i in chosen], labels[chosen].tolist()


def _features(backbone, weights, image_size, paths, precision):
    """(features of `paths`, steady images/s) from the base in `precision`."""
    import keras

    from .features import FeatureSpec, build_extractor
    from .inputs import inference_batches

    extractor = build_extractor(FeatureSpec(backbone, weights, image_size,
                                            precision=precision))
    batches = list(inference_batches(paths, image_size, 32))
    extractor.predict_on_batch(batches[0])  # warm-up: traces the model
    started, rows = time.perf_counter(), []
    for batch in batches:
        rows.append(extractor.predict_on_batch(batch))
    rate = len(paths) / (time.perf_counter() - started)
    keras.backend.clear_session()
    return np.concatenate(rows), rate


def _gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _key(backbone, weights, image_size) -> str:
    import platform

    import tensorflow as tf

    from .backbones import get_backbone, weights_id

    identity = weights_id(get_backbone(backbone), weights, image_size)
    return (f"{backbone}:{image_size}:{identity}:{tf.__version__}:{platform.node()}:"
            f"{os.cpu_count()}")


def _path(workspace):
    from . import config

    return config.cache_dir(Path(workspace)) / "precision.json" if workspace else None


def _remembered(workspace) -> dict:
    from .storage import DamagedFile, read_json_object

    path = _path(workspace)
    try:
        return read_json_object(path, {}) if path else {}
    except DamagedFile:
        return {}  # measured again and rewritten whole


def _remember(workspace, key, result) -> None:
    from .storage import DamagedFile, read_json_object, write_json_atomic

    path = _path(workspace)
    if not path:
        return
    try:
        known = read_json_object(path, {})
    except DamagedFile:
        known = {}
    try:
        write_json_atomic(path, {**known, key: result})
    except OSError:
        pass  # a full disk costs a new measurement next time, never the run
