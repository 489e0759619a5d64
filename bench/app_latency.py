"""The app: how long `streamlit run app.py` takes to serve its first page, and how long one
warm prediction takes on the Predict page's code path (Predictor.predict on one photo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.workload import BenchError, chapter_manifest, fresh_dir, log, median, reset_keras, row
from transfer_core import training
from transfer_core.predict import Predictor
from transfer_core.runs import Run, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PREDICT_TARGET_MS = 300
URLS = {"page": "/", "health": "/_stcore/health"}


def app(s) -> dict:
    startup = streamlit_startup(s)
    rows = [row("app", f"streamlit run → HTTP 200 on {URLS[key]}", f"{startup[key]:.1f} s")
            for key in URLS]
    predictions = {}
    for name, size in s.backbones:
        one = predictions[f"{name}@{size}"] = warm_prediction(s, name, size)
        rows.append(row("app", f"{name}@{size}: one warm prediction (median of {len(one['ms'])})",
                        f"{one['median_ms']:.0f} ms", f"model load {one['load_seconds']:.1f} s",
                        None, f"< {PREDICT_TARGET_MS} ms", one["median_ms"] < PREDICT_TARGET_MS))
    return {"startup_seconds": startup, "predictions": predictions, "rows": rows}


def streamlit_startup(s, timeout: float = 180.0) -> dict:
    """Seconds from starting the server (headless, a free localhost port, an empty workspace)
    until / and the health endpoint each answer 200. The page's script itself runs later, when
    a browser connects."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = fresh_dir(s, "app")
    env = {**os.environ, "TRANSFER_LAB_WORKSPACE": str(workspace)}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port)]
    log_path = workspace / "streamlit.log"
    seconds = {}
    with open(log_path, "wb") as output:
        started = time.perf_counter()
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while len(seconds) < len(URLS):
                if server.poll() is not None or time.perf_counter() - started > timeout:
                    raise BenchError("streamlit did not serve the app:\n"
                                     + log_path.read_text()[-2000:])
                for key, path in URLS.items():
                    if key not in seconds and _ok(f"http://127.0.0.1:{port}{path}"):
                        seconds[key] = time.perf_counter() - started
                time.sleep(0.05)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    log("app", f"first page after {seconds['page']:.1f} s, health after {seconds['health']:.1f} s")
    return seconds


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def warm_prediction(s, name: str, size: int, repeats: int = 20) -> dict:
    """Train a tiny run (20 photos, one epoch: latency does not depend on the weights), load it
    as the Predict page does, predict once to warm up, then time `repeats` predictions."""
    workspace = fresh_dir(s, "predict")
    manifest = chapter_manifest(s.data, (10, 10, 0), workspace)
    config = TrainConfig(manifest=manifest.path, backbone=name, weights="none",
                         strategy="feature_extraction", epochs=1, image_size=size, seed=s.seed)
    run = Run.create_in(workspace / "run", config)
    status = training.train(run, workspace)
    if status["state"] != "finished":
        raise BenchError(f"the tiny run for prediction failed: {status.get('error')}")
    reset_keras()
    photo = Path(s.data) / "cat.3000.jpg"
    photo = (photo if photo.exists() else Path(s.data) / "cat.0.jpg").read_bytes()  # an upload
    started = time.perf_counter()
    predictor = Predictor(run)
    load_seconds = time.perf_counter() - started
    predictor.predict([photo])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = predictor.predict([photo])
        times.append(1000 * (time.perf_counter() - started))
        if "error" in result[0]:
            raise BenchError(f"prediction failed: {result[0]['error']}")
    log("app", f"{name}@{size}: warm prediction {median(times):.0f} ms")
    return {"ms": times, "median_ms": median(times), "max_ms": max(times),
            "load_seconds": load_seconds}
