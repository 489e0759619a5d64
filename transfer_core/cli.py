"""`python -m transfer_core`: the same steps as the app, from the command line.

Every command takes --json and then prints one JSON document on stdout; progress goes to
stderr. A user error prints one line on stderr and exits with status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import config
from .errors import TransferLabError

COMMANDS = {}


def command(name: str, help: str):
    """Register `add_arguments(parser)` / `run(args) -> (dict, text)` pairs by name."""
    def wrap(cls):
        COMMANDS[name] = (help, cls)
        return cls
    return wrap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    try:
        result, text = COMMANDS[args.command][1].run(args)
    except TransferLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(text)
    return int(result.get("exit_code", 0)) if isinstance(result, dict) else 0


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="python -m transfer_core",
        description="Transfer Lab: reuse a pretrained convnet on your own images "
                    "(Deep Learning with Python, 5.3).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, cls) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        child.add_argument("--workspace", default=None,
                           help="manifests, feature cache and runs (default: "
                                "$TRANSFER_LAB_WORKSPACE or ./workspace)")
        child.add_argument("--json", action="store_true",
                           help="print one JSON document on stdout")
        cls.add_arguments(child)
    return parser


def _load_commands() -> None:
    # Each module registers its commands on import; heavy imports stay inside run().
    from . import commands  # noqa: F401


def progress_printer(label: str):
    """A progress callback that redraws one line on stderr at most a few times a second."""
    state = {"last": 0.0, "start": time.perf_counter()}

    def report(done: int, total: int | None):
        now = time.perf_counter()
        if now - state["last"] < 0.3 and done != total:
            return
        state["last"] = now
        rate = done / max(now - state["start"], 1e-9)
        share = f"{done}/{total} ({100 * done / total:.0f}%)" if total else f"{done}"
        end = "\n" if done == total else ""
        print(f"\r{label}: {share}, {rate:.1f}/s", end=end, file=sys.stderr, flush=True)

    return report


def workspace(args) -> "os.PathLike":
    return config.workspace_dir(args.workspace)
