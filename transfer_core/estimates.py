"""How long a run would take on this machine, from a quick measured throughput of the base.

A few forward passes of the randomly initialised base give images/s (speed does not depend
on the weights' values); the FLOPs of the base and of the head turn that into an estimate of
each strategy's time. Estimates, not promises: they leave out start-up and I/O.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from .backbones import flops_per_image, get_backbone

# Training a layer costs about three forward passes (forward, and two matrix products back).
BACKWARD_FACTOR = 3.0


def measure_throughput(backbone: str, image_size: int | None = None, batch_size: int = 8,
                       repeats: int = 2) -> dict:
    """Forward images/s of the base on random input, after one warm-up batch."""
    from .features import FeatureSpec, build_extractor

    spec = FeatureSpec(backbone, "none", image_size).resolved()
    extractor = build_extractor(spec)
    batch = np.random.default_rng(0).integers(0, 255, (batch_size, spec.image_size,
                                                       spec.image_size, 3), dtype="uint8")
    extractor.predict_on_batch(batch)  # warm-up: builds the graph
    started = time.perf_counter()
    for _ in range(repeats):
        extractor.predict_on_batch(batch)
    rate = batch_size * repeats / (time.perf_counter() - started)
    flops = flops_per_image(extractor)
    return {"backbone": backbone, "image_size": spec.image_size, "images_per_second": rate,
            "flops_per_image": flops, "flops_per_second": rate * flops,
            "feature_size": int(math.prod(extractor.output.shape[1:])),
            "feature_channels": int(extractor.output.shape[-1])}


def remembered_throughput(workspace, backbone: str, image_size: int) -> dict:
    """measure_throughput, measured once per machine and kept in the workspace's cache, so a
    fresh app does not pay the measurement again. A cache that cannot be read (damaged) or
    written (a full disk) costs a new measurement, never the answer: the result then says
    why in "not_saved"."""
    import platform

    import tensorflow as tf

    from . import config
    from .storage import DamagedFile, read_json_object, write_failure, write_json_atomic

    path = config.cache_dir(workspace) / "throughput.json"
    key = f"{backbone}:{image_size}:{tf.__version__}:{platform.node()}:{os.cpu_count()}"
    try:
        known = read_json_object(path, {})
    except DamagedFile:
        known = {}  # rewritten whole below
    if isinstance(known.get(key), dict):
        return known[key]
    known[key] = measure_throughput(backbone, image_size)
    try:
        write_json_atomic(path, known)
    except OSError as exc:
        return {**known[key], "not_saved": write_failure(exc, path.parent,
                                                         "remembering the measurement")}
    return known[key]


def estimate_seconds(throughput: dict, n_train: int, n_val: int, epochs: int,
                     fine_tune_epochs: int, dense_units: int = 256, pooling: str = "flatten",
                     top_share: float = 0.1, views: int = 0,
                     fine_tune_on_bank: bool = False) -> dict:
    """Seconds per strategy: base passes at the measured rate, head passes by their FLOPs.

    `top_share` is the fraction of the base's work above the fine-tuning boundary; `views`
    > 0 is the view bank: the frozen part runs once per view, only the rest every epoch (for
    fine_tune the head phase alone, unless `fine_tune_on_bank`: TrainConfig).
    """
    rate = throughput["images_per_second"]
    head_inputs = (throughput["feature_size"] if pooling == "flatten"
                   else throughput["feature_channels"])
    head_flops = 2 * head_inputs * dense_units * BACKWARD_FACTOR
    head_epoch = n_train * head_flops / throughput["flops_per_second"]
    base_epoch = (n_train + n_val) / rate
    fine_epoch = (n_train * (1 + (BACKWARD_FACTOR - 1) * top_share) + n_val) / rate + head_epoch
    scratch = {"from_scratch": scratch_seconds(throughput, n_train, n_val, epochs)}
    if views:
        bank = (views * n_train + n_val) / rate
        top_epoch = (n_train + n_val) * top_share / rate
        fine_tune = (top_epoch * BACKWARD_FACTOR + head_epoch if fine_tune_on_bank
                     else fine_epoch)
        return scratch | {
            "feature_extraction": base_epoch + epochs * head_epoch,
            "feature_extraction_augmented": bank + epochs * head_epoch,
            # On the bank: the prefix bank, then the top once over it (the head phase's
            # input), one full pass either way.
            "fine_tune": bank + epochs * head_epoch + fine_tune_epochs * fine_tune,
        }
    return scratch | {
        "feature_extraction": base_epoch + epochs * head_epoch,
        "feature_extraction_augmented": epochs * (base_epoch + head_epoch),
        "fine_tune": epochs * (base_epoch + head_epoch) + fine_tune_epochs * fine_epoch,
    }


def scratch_flops_per_image(image_size: int) -> float:
    """Forward FLOPs of the chapter's from-scratch convnet (strategies.build_scratch_model):
    2 × multiply-adds of its four 3×3 convolutions and its two dense layers."""
    flops, size, channels = 0.0, image_size, 3
    for filters in (32, 64, 128, 128):
        size -= 2  # a 3×3 convolution without padding
        flops += 2 * size * size * channels * filters * 9
        size, channels = size // 2, filters
    return flops + 2 * size * size * channels * 512 + 2 * 512


def scratch_seconds(throughput: dict, n_train: int, n_val: int, epochs: int,
                    image_size: int | None = None) -> float:
    """from_scratch: every epoch trains the whole convnet on the training photos and runs it
    over the validation photos, at the FLOP rate measured for the backbone."""
    per_image = scratch_flops_per_image(image_size or throughput["image_size"])
    return epochs * (n_train * BACKWARD_FACTOR + n_val) * per_image / throughput["flops_per_second"]


def top_share(backbone: str, image_size: int | None = None, boundary: str | None = None) -> float:
    """The fraction of the base's FLOPs in the layers from `boundary` up."""
    from .backbones import build_base

    entry = get_backbone(backbone)
    base = build_base(entry, "none", image_size or entry.default_size)
    names = [layer.name for layer in base.layers]
    start = names.index(boundary or entry.fine_tune_from)
    total = flops_per_image(base)
    import keras

    top = keras.Model(base.layers[start].input, base.output)
    return flops_per_image(top) / total if total else 0.0


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
