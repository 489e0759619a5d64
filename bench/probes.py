"""One-off checks behind design choices, each printing its figures:

    python bench/probes.py decode   # MobileNetV2: tf.data overlap, decode a chunk, bare forward
    python bench/probes.py head     # the chapter's head on cached features, with and without XLA
    python bench/probes.py top --backbone vgg16   # fine-tuning on the prefix bank, same

`decode` is why `inputs.inference_batches` decodes a chunk before the model runs (CPU only);
`head` is why the head alone trains with jit_compile=True on cached features; `top` is what
XLA does when the top of the base trains too (fine_tune's second phase on the prefix bank).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def decode(data: str, images: int, rounds: int) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from transfer_core.features import FeatureSpec, build_extractor
    from transfer_core.images import load_array
    from transfer_core.inputs import image_dataset

    paths = sorted(str(p) for p in Path(data).glob("*.jpg"))[:images]
    extractor = build_extractor(FeatureSpec("mobilenet_v2", "none", 160))
    signature = tf.TensorSpec((None, 160, 160, 3), tf.uint8)
    forward = tf.function(lambda x: extractor(keras.ops.cast(x, "float32"), training=False),
                          input_signature=[signature])
    noise = np.random.default_rng(0).integers(0, 255, (32, 160, 160, 3), dtype=np.uint8)
    forward(noise)  # trace once: every path below is timed without tracing
    pool = ThreadPoolExecutor(2)

    def rate(run) -> float:
        started = time.perf_counter()
        run()
        return len(paths) / (time.perf_counter() - started)

    def overlapped():
        for batch in image_dataset(paths, None, 160, 32):
            forward(batch).numpy()

    def chunked():
        for start in range(0, len(paths), 256):
            chunk = np.stack(list(pool.map(lambda p: load_array(p, (160, 160)),
                                           paths[start:start + 256])))
            for first in range(0, len(chunk), 32):
                forward(chunk[first:first + 32]).numpy()

    def bare():
        for _ in range(0, len(paths), 32):
            forward(noise).numpy()

    overlapped()  # warm tf.data and the page cache
    for i in range(rounds):
        print(f"round {i + 1}: tf.data overlap {rate(overlapped):.1f} img/s, "
              f"decode a chunk then compute {rate(chunked):.1f}, bare forward {rate(bare):.1f}",
              flush=True)


def head(images: int, epochs: int) -> None:
    import keras
    import numpy as np

    from transfer_core.training import ViewBank

    rng = np.random.default_rng(0)
    features = rng.random((images, 5, 5, 1280), dtype="float32")  # MobileNetV2 at 160 px
    labels = (rng.random(images) > 0.5).astype("float32")
    for jit in (False, True):
        model = keras.Sequential([keras.Input((5, 5, 1280)), keras.layers.Flatten(),
                                  keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dropout(0.5),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.RMSprop(2e-5), loss="binary_crossentropy",
                      metrics=["accuracy"], jit_compile=jit)
        for epoch in range(epochs):
            started = time.perf_counter()
            model.fit(ViewBank(features, labels, 1, 20, 0), epochs=1, verbose=0)
            print(f"jit_compile={jit} epoch {epoch + 1}: {time.perf_counter() - started:.2f} s "
                  f"for {images} images at batch 20", flush=True)


def top(backbone: str, images: int, epochs: int) -> None:
    import keras
    import numpy as np

    from transfer_core.backbones import get_backbone
    from transfer_core.runs import TrainConfig
    from transfer_core.strategies import (build_base_for, build_head, cached_trainer,
                                          compile_model, unfreeze_from)
    from transfer_core.training import ViewBank

    size = {"vgg16": 150}.get(backbone, get_backbone(backbone).default_size)
    config = TrainConfig(manifest="unused.json", backbone=backbone, weights="none",
                         strategy="fine_tune", image_size=size, classes=["cat", "dog"])
    rng = np.random.default_rng(0)
    labels = (rng.random(images) > 0.5).astype("float32")
    for jit in (False, True):
        keras.backend.clear_session()
        base = build_base_for(config)
        trainer = cached_trainer(base, build_head(base.output.shape[1:], 2, config),
                                 config.fine_tune_from)
        unfreeze_from(base, config.fine_tune_from)
        compile_model(trainer, 2, 1e-5, jit_compile=jit)
        features = rng.random((images, *trainer.input.shape[1:]), dtype="float32")
        for epoch in range(epochs):
            started = time.perf_counter()
            trainer.fit(ViewBank(features, labels, 1, 20, 0), epochs=1, verbose=0)
            print(f"{backbone}@{size} from {config.fine_tune_from}, jit_compile={jit} epoch "
                  f"{epoch + 1}: {time.perf_counter() - started:.2f} s for {images} rows at "
                  "batch 20", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probe", choices=["decode", "head", "top"])
    parser.add_argument("--backbone", default="vgg16", help="top: the backbone")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats"))
    parser.add_argument("--images", type=int, default=None,
                        help="photos (decode, default 800) or feature rows (head, default 4000; "
                             "top, default 400)")
    parser.add_argument("--rounds", type=int, default=4, help="decode: rounds; head, top: epochs")
    args = parser.parse_args(argv)
    if args.probe == "decode":
        decode(args.data, args.images or 800, args.rounds)
    elif args.probe == "head":
        head(args.images or 4000, args.rounds)
    else:
        top(args.backbone, args.images or 400, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
