"""The command-line commands: thin wrappers that parse flags and call the library."""

from __future__ import annotations

from pathlib import Path

from .cli import command, progress_printer, workspace
from .datasets import PRESETS, SplitRequest, lay_out, load_manifest, scan, split
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
    lines = [f"{report.root} ({report.layout} layout), {report.seconds:.1f} s"]
    skipped = report.skipped_counts()
    for name, count in report.counts().items():
        lines.append(f"  {name}: {count} usable, {skipped[name]} skipped")
    for item in report.skipped[:20]:
        lines.append(f"  skipped {item['path']}: {item['reason']}")
    if len(report.skipped) > 20:
        lines.append(f"  … and {len(report.skipped) - 20} more skipped (see --json)")
    return "\n".join(lines)


@command("scan", "find the images under a folder and check each one by decoding it")
class Scan:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("path", help="a folder: one sub-folder per class, or cat.1.jpg names")

    @staticmethod
    def run(args):
        report = scan(args.path, progress=None if args.json else progress_printer("checking"))
        return report.summary(), _scan_text(report)


@command("split", "split a folder into train/validation/test and save the manifest")
class Split:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("path", help="the image folder")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--preset", choices=list(PRESETS),
                           help="chapter: 2000/1000/1000 per class in index order (default); "
                                "book: 1000/500/500")
        group.add_argument("--counts", help="per class: train,validation,test (e.g. 2000,1000,1000)")
        group.add_argument("--fractions", help="per class: e.g. 0.7,0.15,0.15 (shuffled by --seed)")
        parser.add_argument("--seed", type=int, default=1337, help="shuffle seed for custom splits")
        parser.add_argument("--name", help="manifest file name (default: derived from the folder)")
        parser.add_argument("--layout", metavar="DIR",
                            help="also lay the split out as folders (train/cats/…) in DIR")
        parser.add_argument("--copy", action="store_true", help="with --layout: copy, not symlink")

    @staticmethod
    def run(args):
        request = SplitRequest(
            preset=args.preset,
            counts=_numbers(args.counts, int) if args.counts else None,
            fractions=_numbers(args.fractions, float) if args.fractions else None,
            seed=args.seed)
        report = scan(args.path, progress=None if args.json else progress_printer("checking"))
        manifest = split(report, request)
        path = manifest.save(workspace(args), args.name)
        result = {"manifest": str(path), "split": request.describe(), "counts": manifest.counts(),
                  "skipped": report.skipped, "classes": manifest.classes}
        if args.layout:
            result["layout"] = str(lay_out(manifest, args.layout, copy=args.copy))
        counts = manifest.counts()
        text = "\n".join([f"manifest: {path}", f"split: {request.describe()}"] + [
            f"  {s}: " + ", ".join(f"{n} {c}" for c, n in counts[s].items()) for s in counts])
        return result, text


@command("extract", "compute (or read from the cache) the conv-base features of one split")
class Extract:
    @staticmethod
    def add_arguments(parser):
        from .backbones import BACKBONES

        parser.add_argument("--data", required=True, help="a manifest made by `split`")
        parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
        parser.add_argument("--backbone", default="vgg16", choices=list(BACKBONES))
        parser.add_argument("--weights", default="imagenet",
                            help="imagenet (Keras download/cache), none, or a weights file")
        parser.add_argument("--image-size", type=int, default=None,
                            help="input size in pixels (default: the backbone's)")
        parser.add_argument("--preprocessing", default="backbone", choices=["backbone", "rescale"],
                            help="the backbone's own preprocess_input, or the chapter's 1/255")
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--seed", type=int, default=1337,
                            help="random initialisation with --weights none")

    @staticmethod
    def run(args):
        from .features import FeatureCache, FeatureSpec

        manifest = load_manifest(Path(args.data))
        spec = FeatureSpec(args.backbone, args.weights, args.image_size, args.preprocessing,
                           args.seed)
        cache = FeatureCache(workspace(args))
        result = cache.extract(manifest, args.split, spec, args.batch_size,
                               progress=progress_printer(f"extracting {args.split}"))
        summary = {**result.summary(), "split": args.split, "spec": spec.resolved().__dict__}
        rate = f", {result.images_per_second:.1f} images/s" if result.images_per_second else ""
        text = (f"{args.split}: {len(result.labels)} images → features "
                f"{tuple(result.features.shape[1:])}, cache {summary['cache']}, "
                f"{result.seconds:.2f} s{rate}\n  {result.folder}")
        return summary, text
