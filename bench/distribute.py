"""Two worker processes on this machine (--distribute multi-worker, TF_CONFIG on 127.0.0.1)
against one process (--distribute none), the same `train` command: wall time, CPU time of
the processes, and the largest difference of the head's weights (docs/BENCHMARKS.md, "Two
workers on one machine").

    .venv/bin/python bench/distribute.py --data workspace/manifests/NAME.json [train flags]

Flags after --data go to `train` unchanged (default: a small VGG16 run with random weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # run as a script: the package is the project's
SMALL = ["--backbone", "vgg16", "--weights", "none", "--image-size", "32", "--epochs", "2",
         "--batch-size", "8", "--learning-rate", "2e-3", "--dropout", "0",
         "--precision", "float32", "--settings", "chapter"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _train(data, workspace, run_dir, distribute, flags, tf_config=None):
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    args = [sys.executable, "-m", "transfer_core", "train", "--data", data, "--workspace",
            str(workspace), "--distribute", distribute, *flags]
    if run_dir:
        args += ["--run-dir", str(run_dir)]
    return subprocess.Popen(args, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _measure(processes) -> dict:
    cpu, started = _children_cpu(), time.perf_counter()
    for process in processes:
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(err[-2000:])
    return {"wall_seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(_children_cpu() - cpu, 1)}


def _ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    args, flags = parser.parse_known_args()
    flags = flags or SMALL
    root = Path(tempfile.mkdtemp(prefix="bench-distribute-"))
    one = _measure([_train(args.data, root / "ws-one", root / "one", "none", flags)])
    workers = [f"127.0.0.1:{port}" for port in _ports(2)]
    two = _measure([_train(args.data, root / f"ws{i}", root / "two" if i == 0 else None,
                           "multi-worker", flags, {"cluster": {"worker": workers},
                                                   "task": {"type": "worker", "index": i}})
                    for i in range(2)])
    print(json.dumps({"one_process": one, "two_workers": two}), file=sys.stderr, flush=True)
    from transfer_core.predict import load_model

    heads = [load_model(root / name / "model.keras").get_layer("head").get_weights()
             for name in ("one", "two")]
    difference = max(float(abs(a - b).max()) for a, b in zip(*heads))
    print(json.dumps({"one_process": one, "two_workers": two,
                      "max_weight_difference": difference, "load_average": os.getloadavg(),
                      "folder": str(root)}, indent=1))


if __name__ == "__main__":
    main()
