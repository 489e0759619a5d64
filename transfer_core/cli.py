"""`python -m transfer_core`: the same steps as the app, from the command line.

Every command takes --json and then prints one JSON document on stdout; progress goes to
stderr. A user error prints one line on stderr and exits with status 1, never a traceback;
so does an error of the system (a full disk, a folder without permission), whose traceback
--verbose shows, with TensorFlow's start-up log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from . import config, quiet
from .errors import PathError, TransferLabError, system_error

COMMANDS = {}


def command(name: str, help: str):
    """Register `add_arguments(parser)` / `run(args) -> (dict, text)` pairs by name."""
    def wrap(cls):
        COMMANDS[name] = (help, cls)
        return cls
    return wrap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # a bad path raises PathError from `path_argument`
    except TransferLabError as exc:
        return _error(exc)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    quiet.install(args.verbose)  # before a command imports TensorFlow
    try:
        result, text = COMMANDS[args.command][1].run(args)
    except TransferLabError as exc:
        return _error(exc)
    except OSError as exc:  # the environment's, not ours: say which file and why
        if args.verbose:
            traceback.print_exc()
        return _error(system_error(exc))
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
        child.add_argument("--workspace", default=None, type=path_argument,
                           help="manifests, feature cache and runs (default: "
                                "$TRANSFER_LAB_WORKSPACE or ./workspace)")
        child.add_argument("--json", action="store_true",
                           help="print one JSON document on stdout")
        child.add_argument("--verbose", action="store_true",
                           help="show TensorFlow's start-up log (also: "
                                f"${quiet.VERBOSE_VARIABLE}=1) and tracebacks of system errors")
        cls.add_arguments(child)
    return parser


def _error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def path_argument(text: str) -> str:
    """An argparse type: a path string any file system could hold, else PathError.

    Raised from parse_args (argparse lets through what is not a ValueError or TypeError), so
    `main` prints it as one line: argparse would print its usage and exit 2.
    """
    if "\0" in text:
        raise PathError(f"The path {_shortened(text)!r} contains a NUL byte (\\0), which no file "
                        "name can hold: check the argument.")
    name_max, path_max = _limits()
    if len(os.fsencode(text)) >= path_max:
        raise PathError(f"The path {_shortened(text)!r} is {len(text):,} characters long; this "
                        f"system takes at most {path_max - 1:,}: check the argument.")
    longest = max(text.split(os.sep), key=lambda name: len(os.fsencode(name)))
    if len(os.fsencode(longest)) > name_max:
        raise PathError(f"The path {_shortened(text)!r} has a name of {len(longest):,} "
                        f"characters; this system takes at most {name_max}: check the argument.")
    return text


def _limits() -> tuple[int, int]:
    try:
        return os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):  # not POSIX: the common Linux values
        return 255, 4096


def _shortened(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[:keep // 2]}…{text[-keep // 2:]}"


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
