"""Keep TensorFlow's start-up chatter off the terminal and out of the logs.

`import tensorflow` and its first look for a GPU print six or seven absl/oneDNN/CUDA lines from
C++ (one reads "E0000 … failed call to cuInit" on any machine without a GPU), and the first of
them come before absl reads TF_CPP_MIN_LOG_LEVEL, so no setting hides them. `install()`, called
first by the CLI and the app, catches stderr while TensorFlow is first imported, wherever that
happens, and passes on every line that is not known start-up noise.
`--verbose` or TRANSFER_LAB_TF_LOGS=1 leave TensorFlow's output alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

VERBOSE_VARIABLE = "TRANSFER_LAB_TF_LOGS"

# What TensorFlow 2.21 prints at start-up on a CPU-only machine (and its GPU build's siblings).
# Matched by content, so that any other line, an error above all, still reaches the user.
NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler",
]))


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_VARIABLE, "").lower() in ("1", "true", "yes", "on")


def install(verbose: bool = False) -> None:
    """Quiet TensorFlow's start-up for this process, unless `verbose` or TRANSFER_LAB_TF_LOGS=1.

    Call it before anything imports TensorFlow; calling it again does nothing.
    """
    if verbose or verbose_requested():
        return
    # After absl starts, this level keeps TensorFlow's errors and drops its info and warnings.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the usual way, once, and wraps its loader in `filtered_stderr`."""

    def __init__(self):
        self.done = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.done:
            return None
        self.done = True  # also stops the lookup below from coming back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # as if never wrapped
        with filtered_stderr():
            self.loader.exec_module(module)
            try:  # the CUDA probe (cuInit) logs on the first look for a GPU: make it now
                module.config.list_physical_devices("GPU")
            except Exception:  # noqa: BLE001  the same call made later reports it
                pass


@contextlib.contextmanager
def filtered_stderr():
    """Catch what C++ and Python write to file descriptor 2; on exit, pass on all but NOISE."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as caught:  # a file, not a pipe: it never fills up and blocks
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            _pass_on(caught.read().decode(errors="replace"))


def _pass_on(text: str) -> None:
    kept = [line for line in text.splitlines(keepends=True) if not NOISE.search(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
