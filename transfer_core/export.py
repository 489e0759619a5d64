"""Take a run's model out: Keras, SavedModel and TFLite (float and int8) files that take raw
photos, with labels, a README, a model card and a parity check against the app, in one zip.

Every exported model takes RGB uint8 pixels at the model's input size and applies the
backbone's preprocessing itself, with standard Keras layers only (no Transfer Lab code needed
to load it). Each file is loaded back with its own runtime and run on a sample of the test
split decoded as the README's snippet decodes it; a float export that labels any photo unlike
the app fails the export (the most reported fault of other tools' exports).
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
from PIL import Image, ImageOps

from . import __version__
from .datasets import load_manifest
from .errors import DatasetError, TransferLabError
from .evaluation import current_evaluation
from .export_formats import FILES, FLOAT_FORMATS, FORMATS
from .inputs import check_split_files
from .layers import Preprocess
from .precision import in_float32
from .predict import Predictor, two_columns
from .runs import Run
from .stats import wilson_interval
from .storage import temp_prefix

# int8 calibration: TFLite's post-training quantization guide asks for "around ~100-500
# samples" of the training data; 100 (evenly spaced, so every class) kept 100% agreement on
# the chapter split (docs/BENCHMARKS.md) and each one more costs conversion time.
REPRESENTATIVE_IMAGES = 100
# Parity runs on up to 200 test photos, evenly spaced over the split (every class, same
# photos each time): enough to see a 1% disagreement, fast enough for the app.
PARITY_IMAGES = 200
INT8_TARGET = 0.99

_PREPROCESSING_TEXT = {
    "tf": "x / 127.5 - 1 (pixels to -1..1)",
    "rescale": "x / 255 (pixels to 0..1)",
    "torch": "(x / 255 - mean) / std per channel (ImageNet mean and std)",
    "caffe": "RGB to BGR, then minus the ImageNet mean per channel",
    "none": "none outside the base (the base rescales its input itself)",
}
RESIZING_TEXT = ("Pillow: open (a JPEG in draft mode at the smallest scale of at least "
                 "{size}×{size}, as training decoded it), apply the EXIF orientation "
                 "(ImageOps.exif_transpose), convert to RGB, resize to {size}×{size} with "
                 "Image.BILINEAR (no crop, no padding: the aspect ratio is not kept)")


class ExportError(TransferLabError):
    """An export that cannot be made, or whose file predicts unlike the app."""


# ---- the model that takes raw pixels --------------------------------------------------------

def raw_pixel_model(model: keras.Model, image_size: int) -> keras.Model:
    """`model` (any size in, float pixels) as a model that takes (N, size, size, 3) uint8.

    The saved model is image → Resizing → Preprocess → base → head; the export drops the
    resizing (the input is already at size) and swaps our Preprocess layer for standard Keras
    layers that do the same, so the file loads anywhere Keras does.
    """
    names = [layer.name for layer in model.layers]
    if "preprocess" not in names:
        raise ExportError(f"The model has no preprocessing layer (layers: {names}); it was "
                          "saved by an older Transfer Lab: train the run again.")
    mode = model.get_layer("preprocess").mode
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = inputs
    for layer in standard_preprocessing(mode):
        x = layer(x)
    for layer in model.layers[names.index("preprocess") + 1:]:  # base, head
        _drop_training_state(layer)
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def _drop_training_state(layer: keras.layers.Layer) -> None:
    """The head comes back from model.keras compiled, with RMSprop's slot for each weight
    (33 MB for MobileNetV2's Flatten head): an exported model only predicts."""
    if isinstance(layer, keras.Model) and getattr(layer, "optimizer", None) is not None:
        layer.optimizer = None
        layer.compiled = False


def standard_preprocessing(mode: str) -> list[keras.layers.Layer]:
    """Keras layers equal to Preprocess(mode) on uint8 pixels; Rescaling casts them to float."""
    if mode == "caffe":  # a fixed 1×1 convolution: channels flipped to BGR, mean subtracted
        flip = keras.layers.Conv2D(3, 1, name="rgb_to_bgr_minus_mean", trainable=False)
        flip.build((None, None, None, 3))
        flip.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3),
                          -np.array(Preprocess._CAFFE_MEAN, "float32")])
        return [keras.layers.Rescaling(1.0, name="to_float"), flip]
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if mode == "rescale":
        return [keras.layers.Rescaling(1 / 255, name="preprocess")]
    if mode == "torch":
        mean, std = np.array(Preprocess._TORCH_MEAN), np.array(Preprocess._TORCH_STD)
        return [keras.layers.Rescaling((1 / (255 * std)).tolist(), offset=(-mean / std).tolist(),
                                       name="preprocess")]
    return [keras.layers.Rescaling(1.0, name="to_float")]


# ---- decoding a photo as the README tells a user to ----------------------------------------

def load_photo(path: str | Path, image_size: int) -> np.ndarray:
    """(size, size, 3) uint8: exactly the README's snippet, which matches the app's decoding
    (`images.load_array`: a test checks they agree)."""
    with Image.open(path) as image:
        image.draft("RGB", (image_size, image_size))  # a JPEG decodes at a reduced scale
        image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(image.resize((image_size, image_size), Image.BILINEAR), np.uint8)


def evenly_spaced(items: list, count: int) -> list[int]:
    """Up to `count` indices spread evenly over `items`: deterministic, and every class of a
    split stored class by class is in it."""
    if len(items) <= count:
        return list(range(len(items)))
    return sorted({int(i) for i in np.linspace(0, len(items) - 1, count).round()})


# ---- writing and loading each format --------------------------------------------------------

def _write_keras(model, folder: Path, _context) -> Path:
    path = folder / FILES["keras"]
    model.save(path)
    return path


def _write_savedmodel(model, folder: Path, _context) -> Path:
    """A SavedModel with one signature, serving_default: image (uint8) → probabilities.

    Not `model.export()`: Keras 3.15 writes every weight twice there, once per Python wrapper
    of the same variable (keras-team/keras#23553: 80 MB of variables for MobileNetV2's 42 MB).
    Tracking the TF variables that the traced function captures stores each once.
    """
    import tensorflow as tf

    size = model.input_shape[1]
    module = tf.Module()
    module.weights = [variable.value for variable in model.variables]  # the tf.Variables
    module.serve = tf.function(
        lambda image: {"probabilities": model(image, training=False)},
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8, name="image")])
    path = folder / FILES["savedmodel"]
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def _converter(model, context):
    import tensorflow as tf

    if "saved_model" not in context:  # the TFLite converter reads a SavedModel
        context["saved_model"] = _write_savedmodel(model, context["scratch"], None)
    return tf.lite.TFLiteConverter.from_saved_model(str(context["saved_model"]))


def _write_tflite(model, folder: Path, context) -> Path:
    path = folder / FILES["tflite"]
    path.write_bytes(_convert(_converter(model, context), "tflite"))
    return path


def _convert(converter, fmt: str) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 — the converter raises its own and TF's errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ExportError(f"The TFLite converter could not make the {fmt} file ({first}): "
                          "export the other formats.") from None


def _write_tflite_int8(model, folder: Path, context) -> Path:
    """Post-training int8: weights and activations in 8 bits, calibrated on training photos.

    The input stays uint8 pixels (the model casts them itself: no scale or zero point for a
    user to apply). The output is float32 (one dequantize op at the end), so a user's code reads
    probabilities as from the float model; they still come in steps of 1/256, the sigmoid or
    softmax running in 8 bits. An 8-bit output would save only that op and make every user
    apply the output's scale and zero point by hand.
    """
    import tensorflow as tf

    converter = _converter(model, context)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    photos = context["representative"]
    converter.representative_dataset = lambda: ([photo[None]] for photo in photos)
    converter.inference_input_type = tf.uint8
    path = folder / FILES["tflite-int8"]
    path.write_bytes(_convert(converter, "tflite-int8"))
    return path


_WRITERS = {"keras": _write_keras, "savedmodel": _write_savedmodel, "tflite": _write_tflite,
            "tflite-int8": _write_tflite_int8}


def tflite_interpreter(path: str | Path):
    """LiteRT's interpreter (the maintained package, ai-edge-litert), else TF's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # an environment without it: tf.lite's copy of the same interpreter
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def tflite_runtime_name() -> str:
    try:
        import ai_edge_litert  # noqa: F401
        return "ai_edge_litert.interpreter.Interpreter"
    except ImportError:
        return "tf.lite.Interpreter"


def loaded_predictor(fmt: str, path: Path):
    """A function photos (N, size, size, 3) uint8 → raw outputs, from the file alone, loaded
    by the runtime a user of that format would use."""
    if fmt == "keras":
        model = keras.models.load_model(path, safe_mode=True, compile=False)
        return lambda photos: model.predict_on_batch(photos)
    if fmt == "savedmodel":
        import tensorflow as tf
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda photos: serve(image=tf.constant(photos))["probabilities"].numpy()
    interpreter = tflite_interpreter(path)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run(photos):
        rows = []
        for photo in photos:  # one photo at a time, as a phone app calls it
            interpreter.set_tensor(source, photo[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(target)[0].copy())
        return np.stack(rows)
    return run


# ---- parity ---------------------------------------------------------------------------------

def parity_row(fmt: str, probs: np.ndarray, app_probs: np.ndarray, labels: np.ndarray,
               names: list[str], classes: list[str]) -> dict:
    """One format against the app on the same photos: label agreement, the largest absolute
    probability difference, accuracy, and the photos labelled otherwise."""
    ours, theirs = probs.argmax(axis=1), app_probs.argmax(axis=1)
    differ = np.flatnonzero(ours != theirs)
    return {
        "format": fmt, "images": int(len(labels)),
        "agreement": float(np.mean(ours == theirs)),
        "max_abs_probability_difference": float(np.max(np.abs(probs - app_probs))),
        "accuracy": float(np.mean(ours == labels)),
        "app_accuracy": float(np.mean(theirs == labels)),
        "disagreements": [{"photo": names[i], "app": classes[theirs[i]],
                           "export": classes[ours[i]]} for i in differ[:10]],
    }


def check_parity(row: dict) -> None:
    """A float export must label every photo as the app does; int8 is reported, not failed."""
    if row["format"] not in FLOAT_FORMATS:
        row["meets_target"] = row["agreement"] >= INT8_TARGET
        return
    if row["agreement"] == 1.0:
        return
    first = row["disagreements"][0]
    wrong = round((1 - row["agreement"]) * row["images"])
    raise ExportError(
        f"The {row['format']} export labels {wrong} of {row['images']} test photos unlike the "
        f"app (e.g. {first['photo']}: app {first['app']}, export {first['export']}; largest "
        f"probability difference {row['max_abs_probability_difference']:.4f}): nothing was "
        "written. This is a bug in the export: report it with the run's config.json.")


def parity_text(rows: list[dict]) -> str:
    lines = ["format       agreement  max |Δp|   accuracy (app)"]
    lines += [f"{r['format']:<12} {100 * r['agreement']:8.1f}%  "
              f"{r['max_abs_probability_difference']:.1e}  "
              f"{100 * r['accuracy']:.1f}% ({100 * r['app_accuracy']:.1f}%)" for r in rows]
    return "\n".join(lines)


# ---- the model card, labels and README ------------------------------------------------------

def held_out_accuracy(run: Run) -> dict | None:
    """The run's test accuracy with its 95% Wilson interval, if evaluation.json is of this
    model (the same mtime); None otherwise."""
    result = current_evaluation(run, "test")
    if result is None:
        return None
    total = int(result["images"])
    low, high = result.get("accuracy_interval") or wilson_interval(
        round(result["accuracy"] * total), total)  # evaluation.json of an older version
    return {"split": result.get("split", "test"), "images": total,
            "accuracy": result["accuracy"], "interval_95": [low, high],
            "interval_method": "Wilson score"}


def model_card(run: Run, mode: str, files: dict, parity: list[dict], representative: int) -> dict:
    config = run.config
    return {
        "run": run.name, "backbone": config.backbone, "weights": config.weights,
        "strategy": config.strategy, "classes": config.classes,
        "input": {"shape": [1, config.image_size, config.image_size, 3], "dtype": "uint8",
                  "pixels": "RGB, 0..255, the photo resized as the README says"},
        "output": ("probability of the second class (sigmoid)" if len(config.classes) == 2
                   else "probability of each class (softmax)"),
        "preprocessing": {"mode": mode, "what": _PREPROCESSING_TEXT[mode],
                          "where": "inside every exported model",
                          "resizing": RESIZING_TEXT.format(size=config.image_size)},
        "test_accuracy": held_out_accuracy(run),
        "int8_representative_images": representative,
        "files": files, "parity": parity,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "transfer_lab_version": __version__,
    }


def readme(card: dict) -> str:
    size, classes = card["input"]["shape"][1], card["classes"]
    binary = len(classes) == 2
    to_probs = ("probs = [1 - float(out[0][0]), float(out[0][0])]  # sigmoid: P(second class)"
                if binary else "probs = [float(p) for p in out[0]]")
    load = f'''from PIL import Image, ImageOps
import numpy as np

labels = open("labels.txt").read().splitlines()
image = Image.open("photo.jpg")
image.draft("RGB", ({size}, {size}))  # a JPEG decodes at a reduced scale, as in training
image = ImageOps.exif_transpose(image).convert("RGB")
pixels = np.asarray(image.resize(({size}, {size}), Image.BILINEAR), np.uint8)[None]
'''
    snippets = {
        "keras": f'''import keras
{load}model = keras.models.load_model("model.keras")
out = model.predict(pixels)''',
        "savedmodel": f'''import tensorflow as tf
{load}serve = tf.saved_model.load("saved_model").signatures["serving_default"]
out = serve(image=tf.constant(pixels))["probabilities"].numpy()''',
        "tflite": f'''from ai_edge_litert.interpreter import Interpreter  # or tf.lite.Interpreter
{load}interpreter = Interpreter(model_path="MODEL_FILE")
interpreter.allocate_tensors()
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
interpreter.invoke()
out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])''',
    }
    parts = [f"# {card['run']}: {card['backbone']} ({card['strategy']}), exported by "
             f"Transfer Lab {card['transfer_lab_version']}", "",
             f"Classes (labels.txt, in output order): {', '.join(classes)}.", "",
             _accuracy_line(card["test_accuracy"]), "",
             f"Every model takes RGB uint8 pixels, shape (1, {size}, {size}, 3), and applies its "
             f"preprocessing itself ({card['preprocessing']['what']}): do not scale the pixels.",
             f"Resizing, the same as the app: {card['preprocessing']['resizing']}. (A "
             "transparent PNG: the app paints transparent pixels white.)", "",
             "parity.json: each file loaded back with its own runtime and run on test photos "
             "against the app (label agreement, largest probability difference, accuracy).",
             "model_card.json: backbone, strategy, classes, preprocessing, test accuracy.", ""]
    for fmt, entry in card["files"].items():
        kind = "tflite" if fmt.startswith("tflite") else fmt
        code = snippets[kind].replace("MODEL_FILE", entry["path"])
        parts += [f"## {fmt}: `{entry['path']}`", "", "```python", code,
                  to_probs, "print(labels[int(np.argmax(probs))], probs)", "```", ""]
    if "tflite-int8" in card["files"]:
        parts += ["`model_int8.tflite` is quantized to 8 bits (calibrated on "
                  f"{card['int8_representative_images']} training photos): it takes the same "
                  "uint8 pixels and returns float probabilities, in steps of 1/256 (8-bit "
                  "arithmetic); parity.json says how often it agrees with the app.", ""]
    return "\n".join(parts)


def _accuracy_line(accuracy: dict | None) -> str:
    if not accuracy:
        return ("Test accuracy: not evaluated yet (the Evaluate page, or "
                "`python -m transfer_core evaluate RUN`).")
    low, high = accuracy["interval_95"]
    return (f"Test accuracy: {100 * accuracy['accuracy']:.1f}% of {accuracy['images']} "
            f"{accuracy['split']} photos (95% Wilson interval "
            f"{100 * low:.1f}–{100 * high:.1f}%).")


# ---- the whole export -----------------------------------------------------------------------

def parse_formats(text: str | list[str]) -> list[str]:
    chosen = [f.strip() for f in (text.split(",") if isinstance(text, str) else text)]
    chosen = [f for f in chosen if f]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ExportError(f"`formats` must be some of {', '.join(FORMATS)} (comma-separated). "
                          f"Received: {','.join(chosen)!r}")
    return [f for f in FORMATS if f in chosen]  # a fixed order, without repeats


def split_photos(run: Run, split: str, count: int) -> tuple[list[str], np.ndarray]:
    paths, labels = load_manifest(run.config.manifest).files(split)
    if not paths:
        raise DatasetError(f"The run's manifest has no {split} images; the export needs them "
                           f"({'calibration' if split == 'train' else 'parity check'}).")
    chosen = evenly_spaced(paths, count)
    paths, labels = [paths[i] for i in chosen], np.asarray(labels)[chosen]
    check_split_files(paths, split)
    return paths, labels


def export_run(run: Run, formats=FORMATS, out: str | Path | None = None,
               parity_images: int = PARITY_IMAGES,
               representative_images: int = REPRESENTATIVE_IMAGES,
               progress=None) -> dict:
    """Write the chosen formats, check each against the app, and zip them with labels.txt,
    README.md, model_card.json and parity.json into OUT/<run>-export.zip (OUT: the run's
    export/ folder). Returns the card with "zip" and "parity". Raises ExportError when a float
    export labels any photo unlike the app; nothing is then written. `progress(text)` hears
    each step.
    """
    formats = parse_formats(formats)
    report = progress or (lambda text: None)
    config = run.config
    # One load of the model serves the export and the app's reference predictions. Both
    # compute in float32: TFLite has no bfloat16 convolutions, and float32 is what every
    # runtime reads.
    predictor = Predictor(run, ood=False)
    predictor.model = in_float32(predictor.model)
    model = raw_pixel_model(predictor.model, config.image_size)
    mode = model_mode(run)
    paths, labels = split_photos(run, "test", parity_images)
    report(f"the app's predictions on {len(paths)} test photos")
    app_probs = _app_probabilities(predictor, paths)
    photos = np.stack([load_photo(p, config.image_size) for p in paths])
    names = [Path(p).name for p in paths]
    out = Path(out) if out else run.folder / "export"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=temp_prefix("export")) as temp:
        folder, scratch = Path(temp) / "files", Path(temp) / "scratch"
        folder.mkdir()
        scratch.mkdir()
        context = {"scratch": scratch}
        if "tflite-int8" in formats:
            train_paths, _ = split_photos(run, "train", representative_images)
            context["representative"] = [load_photo(p, config.image_size) for p in train_paths]
        files, parity = {}, []
        for fmt in formats:
            report(f"writing {fmt}")
            started = time.perf_counter()
            path = _WRITERS[fmt](model, folder, context)
            if fmt == "savedmodel":
                context["saved_model"] = path
            seconds = time.perf_counter() - started
            report(f"checking {fmt}")
            probs = two_columns(loaded_predictor(fmt, path)(photos))
            row = parity_row(fmt, probs, app_probs, labels, names, config.classes)
            check_parity(row)
            parity.append(row)
            files[fmt] = {"path": path.name + ("/" if path.is_dir() else ""),
                          "bytes": _size(path), "seconds_to_write": round(seconds, 2)}
        card = model_card(run, mode, files, parity,
                          len(context.get("representative", [])))
        card["runtimes"] = {"savedmodel": "tf.saved_model.load", "keras": "keras.models.load_model",
                            "tflite": tflite_runtime_name()}
        card["parity_sample"] = (f"{len(paths)} test photos, evenly spaced over the split "
                                 "(the same each time), decoded as the README says")
        _write_extras(folder, card)
        zip_path = out / f"{run.name}-export.zip"
        _zip_atomic(folder, zip_path)
    return {**card, "zip": str(zip_path), "zip_bytes": zip_path.stat().st_size,
            "contents": zip_contents(zip_path)}


def model_mode(run: Run) -> str:
    from .backbones import get_backbone, preprocess_mode
    if run.config.strategy == "from_scratch":  # the chapter's 1/255, whatever the backbone
        return "rescale"
    return preprocess_mode(get_backbone(run.config.backbone), run.config.preprocessing)


def _app_probabilities(predictor: Predictor, paths: list[str]) -> np.ndarray:
    """What the app's Predict page says for each photo (predict.Predictor, the same files)."""
    results = predictor.predict(paths)
    bad = [r["error"] for r in results if "error" in r]
    if bad:
        raise ExportError(f"{bad[0]}: the test photos changed since the split; split again.")
    return np.array([[r["probabilities"][c] for c in predictor.classes] for r in results])


def _write_extras(folder: Path, card: dict) -> None:
    (folder / "labels.txt").write_text("\n".join(card["classes"]) + "\n")
    (folder / "parity.json").write_text(json.dumps(
        {"sample": card["parity_sample"], "runtimes": card["runtimes"],
         "rows": card["parity"]}, indent=1))
    (folder / "model_card.json").write_text(json.dumps(card, indent=1))
    (folder / "README.md").write_text(readme(card))


def _zip_atomic(folder: Path, zip_path: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=zip_path.parent, prefix=temp_prefix(zip_path.name),
                                suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
        os.replace(temp, zip_path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def zip_contents(zip_path: str | Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_text(result: dict) -> str:
    sizes = ", ".join(f"{fmt} {f['bytes'] / 1e6:.1f} MB" for fmt, f in result["files"].items())
    return f"{result['zip']}\n  {sizes}\n" + parity_text(result["parity"])
