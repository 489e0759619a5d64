"""`python -m transfer_core`: the same steps as the app, from the command line.

Every command takes --json and then prints one JSON document on stdout; progress goes to
stderr. A user error prints one line on stderr and exits with status 1, never a traceback;
so does an error of the system (a full disk, a folder without permission), whose traceback
--verbose shows, with TensorFlow's start-up log.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from . import quiet
from .cli_shared import COMMANDS, path_argument
from .errors import TransferLabError, system_error


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


def _load_commands() -> None:
    # Each module registers its commands on import (cli → commands → cli_shared, one way);
    # heavy imports stay inside run(), after quiet.install.
    from . import commands  # noqa: F401
