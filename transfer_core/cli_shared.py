"""What every command-line command shares: the registry that `command` fills, the argparse
type of a path, a progress line on stderr, and the workspace. Imported by the commands and by
cli.py, which builds the parser from the registry; it imports neither (one-way).
"""

from __future__ import annotations

import os
import sys
import time

from . import config
from .errors import PathError

COMMANDS = {}


def command(name: str, help: str):
    """Register `add_arguments(parser)` / `run(args) -> (dict, text)` pairs by name."""
    def wrap(cls):
        COMMANDS[name] = (help, cls)
        return cls
    return wrap


def path_argument(text: str) -> str:
    """An argparse type: a path string any file system could hold, else PathError.

    Raised from parse_args (argparse lets through what is not a ValueError or TypeError), so
    `main` prints it as one line: argparse would print its usage and exit 2.
    """
    if "\0" in text:
        raise PathError(f"The path {_shortened(text)!r} contains a NUL byte (\\0), which no file "
                        "name can hold: check the argument.")
    name_max, path_max = config.path_limits()
    if len(os.fsencode(text)) >= path_max:
        raise PathError(f"The path {_shortened(text)!r} is {len(text):,} characters long; this "
                        f"system takes at most {path_max - 1:,}: check the argument.")
    longest = max(text.split(os.sep), key=lambda name: len(os.fsencode(name)))
    if len(os.fsencode(longest)) > name_max:
        raise PathError(f"The path {_shortened(text)!r} has a name of {len(longest):,} "
                        f"characters; this system takes at most {name_max}: check the argument.")
    return text


def _shortened(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[:keep // 2]}…{text[-keep // 2:]}"


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


def workspace(args) -> os.PathLike:
    return config.workspace_dir(args.workspace)
