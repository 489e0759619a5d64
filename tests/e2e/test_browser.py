"""A real browser walks the app end to end, as a student would: demo set, a fast run on a tiny
backbone (reloading the tab while it trains), curves, test evaluation and predictions.

The app is started the way ./run starts it, on a free localhost port with a fresh workspace, and
driven by Playwright through Debian's Chromium (`/usr/bin/chromium`, which `./test` installs when
it can; Playwright's own browser download is not used). Without Chromium the test fails in CI
(CI=true) and is skipped elsewhere, with the reason.

Every page is checked for a Streamlit exception box, traceback text, error messages and browser
console errors, and saved as a screenshot in test-artifacts/screenshots/ (and in
$TRANSFER_LAB_SCREENSHOTS when set: `scripts/readme-screenshots` refreshes docs/screenshots/).

Everything lives in this one module: a second conftest.py would shadow tests/conftest.py, which
the other test modules import as `conftest`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

PROJECT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}

# Console errors that are not the app's, each matched on (message, the URL it names).
BENIGN_CONSOLE_ERRORS = [
    # Streamlit issue #7074: opening or reloading a page's own URL (/train) makes the frontend
    # probe /train/_stcore/health and /train/_stcore/host-config first (404), then the real
    # /_stcore/… endpoints.
    (re.compile(r"404"),
     re.compile(r"^http://127\.0\.0\.1:\d+/[\w-]+/_stcore/(health|host-config)$")),
]
# Requests to other hosts are blocked (the app must work offline); these are expected.
EXPECTED_EXTERNAL = [
    # st.set_page_config(page_icon=":material/science:"): Streamlit fetches the tab's favicon as
    # an SVG from Google's font CDN. Only the browser tab's icon is missing without it.
    re.compile(r"^https://fonts\.gstatic\.com/s/i/short-term/release/materialsymbolsrounded/"),
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_chromium() -> str | None:
    """$TRANSFER_LAB_CHROMIUM when set (and then only it), else Debian's or PATH's chromium."""
    chosen = os.environ.get("TRANSFER_LAB_CHROMIUM")
    candidates = [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        chosen = os.environ.get("TRANSFER_LAB_CHROMIUM")
        where = (f"TRANSFER_LAB_CHROMIUM={chosen} is not an executable" if chosen else
                 "Chromium not found (/usr/bin/chromium or `chromium` on PATH)")
        reason = (f"{where}: the browser test cannot run. `./test` installs Chromium with "
                  "apt-get when run as root; otherwise `sudo apt-get install chromium`.")
        if in_ci():
            pytest.fail("CI: " + reason, pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """The Streamlit app started the way ./run starts it, on a free port, in a fresh workspace."""

    def __init__(self, workspace: Path, log_path: Path):
        self.workspace = workspace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "TRANSFER_LAB_WORKSPACE": str(workspace),
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        env.pop("TRANSFER_LAB_DATA", None)  # the Dataset page then offers the demo set first
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=PROJECT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_until_serving(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"streamlit did not serve {self.url} within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self._stop_training_workers()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def _stop_training_workers(self) -> None:
        """A run trains in its own session (it outlives the app by design): end ours."""
        for status_path in (self.workspace / "runs").glob("*/status.json"):
            try:
                status = json.loads(status_path.read_text())
            except (OSError, ValueError):
                continue
            if status.get("state") in ("queued", "running") and status.get("pid"):
                try:
                    os.kill(int(status["pid"]), signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture(scope="module")
def app(tmp_path_factory, chromium_path):
    server = App(tmp_path_factory.mktemp("workspace"), ARTIFACTS / "e2e" / "streamlit.log")
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()


class Watcher:
    """Console errors, uncaught page errors and blocked requests to other hosts."""

    def __init__(self):
        self.errors: list[str] = []
        self.external: list[str] = []

    def on_console(self, message) -> None:
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        if url in self.external:
            return  # reported as a blocked request below, not twice
        if any(text.search(message.text) and where.search(url)
               for text, where in BENIGN_CONSOLE_ERRORS):
            return
        self.errors.append(f"console: {message.text} ({url})")

    def on_page_error(self, error) -> None:
        self.errors.append(f"pageerror: {error}")

    def unexpected_external(self) -> list[str]:
        return [u for u in self.external if not any(p.search(u) for p in EXPECTED_EXTERNAL)]


@pytest.fixture(scope="module")
def browser(chromium_path):
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)  # this run's pictures only
    with sync_playwright() as playwright:
        # A plain launch starts from a fresh temporary profile (no cookies, no cache).
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    context = browser.new_context(viewport=VIEWPORT)
    yield watched_page(context, app.url)
    context.close()


def watched_page(context, url: str) -> Page:
    """A new page of `context` whose console errors are recorded (`page.watcher`), and whose
    requests to hosts other than `url` are blocked and recorded: the app must work offline."""
    page = context.new_page()
    page.set_default_timeout(30_000)
    watcher = Watcher()
    page.on("console", watcher.on_console)
    page.on("pageerror", watcher.on_page_error)

    def route(route):
        if route.request.url.startswith((url, "data:", "blob:")):
            route.continue_()
        else:
            watcher.external.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page.watcher = watcher
    return page


def screenshot(page, name: str, publish: bool = True) -> Path:
    """The whole page (Streamlit scrolls its main area, not the document: grow the viewport to
    fit it), into test-artifacts/screenshots/ and, when `publish` and $TRANSFER_LAB_SCREENSHOTS
    names a folder (docs/screenshots for the README), there too."""
    height = page.evaluate(
        "() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height)})
    try:
        page.wait_for_timeout(800)  # plotly redraws at the new size
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(VIEWPORT)
    extra = os.environ.get("TRANSFER_LAB_SCREENSHOTS")
    if extra and publish:
        target = Path(extra) if Path(extra).is_absolute() else PROJECT / extra
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)
    return path


# ---- the tour --------------------------------------------------------------------------------

# The fastest combination the Train page offers: random weights need no download, and at 32 px
# VGG16's features are 1 × 1 × 512, so extraction and three epochs take seconds on a CPU.
RUN_SETTINGS = {"backbone": "vgg16", "image_size": 32, "weights": "none",
                "strategy": "feature_extraction", "epochs": 3, "learning_rate": 1e-3}
# For the README's screenshots (scripts/readme-screenshots): real ImageNet MobileNetV2 weights
# from $KERAS_HOME, so the pictures show transfer learning that works, not a random network.
if os.environ.get("TRANSFER_LAB_E2E_PRETRAINED"):
    RUN_SETTINGS = {"backbone": "mobilenet_v2", "image_size": 96, "weights": "imagenet",
                    "strategy": "feature_extraction", "epochs": 8, "learning_rate": 1e-4}
BACKBONE_LABELS = {"vgg16": "VGG16", "mobilenet_v2": "MobileNetV2"}
CLASSES = ("forests", "oceans", "sunsets")

# On two CPU cores the app's first TensorFlow import alone takes ~10 s: be patient by default.
expect.set_options(timeout=30_000)


def settle(page: Page, timeout: float = 60) -> None:
    """Wait until Streamlit has run the script and drawn the result: the app says it is not
    running, nothing is greyed out as stale, and it stays so for a moment (st.rerun() and the
    Train page's live fragment end one run and start the next)."""
    page.wait_for_timeout(250)  # let a click's rerun request reach the server first
    app, stale = page.get_by_test_id("stApp"), page.locator('[data-stale="true"]')
    deadline, quiet_since = time.monotonic() + timeout, None
    while True:
        now = time.monotonic()
        if app.get_attribute("data-test-script-state") == "notRunning" and stale.count() == 0:
            quiet_since = quiet_since or now
            if now - quiet_since >= 0.6:
                return
        else:
            quiet_since = None
        assert now < deadline, f"the app was still running after {timeout:.0f} s"
        page.wait_for_timeout(100)


def check_page(page: Page, name: str) -> None:
    """What no page may show, then its screenshot."""
    settle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    assert "Traceback" not in page.locator("body").inner_text(), f"{name}: traceback text"
    assert page.watcher.errors == [], f"{name}: browser console errors"
    screenshot(page, name)


def go_to(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    settle(page)


def set_number(page: Page, label: str, value) -> None:
    field = page.get_by_role("spinbutton", name=label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    settle(page, timeout=120)  # a new image size measures the backbone again


class Steps:
    """Prints how long each step took (pytest shows it when the test fails)."""

    def __init__(self):
        self.start = self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        print(f"{now - self.start:6.1f} s (+{now - self.last:5.1f} s) {name}", flush=True)
        self.last = now


def test_a_student_tours_the_app(page: Page, app: App, tmp_path):
    try:
        tour(page, app, tmp_path)
    except BaseException:
        print(f"streamlit log (tail), all of it in {app.log_path}:\n{app.log()}")
        try:
            print(f"the page when it failed: {screenshot(page, 'failure', publish=False)}")
        except Exception as exc:  # the browser may be what failed
            print(f"no screenshot of the failure: {exc}")
        raise


def tour(page: Page, app: App, tmp_path: Path) -> None:
    step = Steps()
    page.goto(app.url)
    expect(page.get_by_role("heading", name="Dataset", exact=True)).to_be_visible(timeout=60_000)
    settle(page)
    step("app open")

    # Dataset: the demo set, its counts, a saved split, the sample grid.
    page.get_by_test_id("stRadio").get_by_text("Demo set", exact=True).click()
    settle(page)
    page.get_by_role("button", name="Create the demo set").click()
    expect(page.get_by_role("heading", name="What is in it")).to_be_visible(timeout=60_000)
    metrics = page.get_by_test_id("stMetric")
    expect(metrics).to_have_count(len(CLASSES))
    for name in CLASSES:
        expect(metrics.filter(has_text=name)).to_contain_text("60 usable")
    settle(page, timeout=120)  # the augmentation preview imports TensorFlow
    step("demo set checked")
    page.get_by_role("button", name="Save this split").click()
    expect(page.get_by_text("It is now the current dataset")).to_be_visible()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text("train 126 · validation 27 · test 27")
    expect(page.get_by_role("heading", name="Sample photos")).to_be_visible()
    for name in CLASSES:
        expect(page.get_by_text(f"{name} · train", exact=True)).to_be_visible()
    settle(page)
    assert page.locator('[data-testid="stImage"] img').count() >= 8 * len(CLASSES)
    check_page(page, "1-dataset")
    step("split saved")

    # Train: the fastest run the page offers.
    go_to(page, "Train")
    settle(page, timeout=120)  # it measures the default backbone on this machine
    page.get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
    page.get_by_role("option", name=BACKBONE_LABELS[RUN_SETTINGS["backbone"]], exact=True).click()
    settle(page, timeout=120)
    set_number(page, "Image size (pixels)", RUN_SETTINGS["image_size"])
    page.get_by_text("none (random: for testing only)" if RUN_SETTINGS["weights"] == "none"
                     else "ImageNet (pretrained)", exact=True).click()
    settle(page)
    page.get_by_test_id("stRadio").filter(has_text="Strategy").get_by_text(
        "feature extraction", exact=True).click()
    settle(page)
    # A demo split is not one of the chapter's presets, so "Recommended" is offered first; the
    # walk sets its own epochs and rate, as the chapter's settings let it.
    page.get_by_text("The chapter's settings", exact=True).click()
    settle(page)
    set_number(page, "Epochs", RUN_SETTINGS["epochs"])
    set_number(page, "Learning rate", f"{RUN_SETTINGS['learning_rate']:g}")
    check_page(page, "2-train")
    step("run configured")

    page.get_by_role("button", name="Start training").click()
    run_heading = page.get_by_role("heading", name=re.compile(
        rf"^Run \S+-{RUN_SETTINGS['backbone']}-feature_extraction"))
    expect(run_heading).to_be_visible()
    run_name = run_heading.inner_text().removeprefix("Run ").strip()
    config = json.loads((app.workspace / "runs" / run_name / "config.json").read_text())
    assert {k: config[k] for k in RUN_SETTINGS} == RUN_SETTINGS, "the form's values reach the run"
    expect(sidebar).to_contain_text(run_name)
    progress = page.get_by_test_id("stMain").get_by_test_id("stProgress")
    expect(progress).to_be_visible(timeout=120_000)  # the worker process imports TensorFlow
    step("training")
    screenshot(page, "2-train-running")

    # Reload the tab while it trains: the run lives in its own process and folder, not the tab.
    page.reload()
    expect(page.get_by_role("heading", name=f"Run {run_name}")).to_be_visible(timeout=60_000)
    # Still training, or (3 tiny epochs on a quiet machine) done while the tab reloaded: the
    # run went on without the tab either way. It failed once here, finishing at epoch 3/3.
    sidebar_done = sidebar.get_by_text(re.compile(r"(finished|running · epoch 3/3)"))
    expect(progress.or_(sidebar_done).first).to_be_visible()
    expect(sidebar).to_contain_text(run_name)
    step("reloaded, still training")
    expect(page.get_by_text("Finished. The last epoch's model is saved.")).to_be_visible(
        timeout=150_000)
    expect(sidebar).to_contain_text("finished")
    check_page(page, "2-train-finished")
    step("run finished")

    # Curves: raw points and smoothed lines, for training and validation, in both charts
    # (one run: the legend does not repeat its name).
    go_to(page, "Curves")
    charts = page.get_by_test_id("stPlotlyChart")
    expect(charts).to_have_count(2)
    for chart in (charts.nth(0), charts.nth(1)):
        expect(chart.locator(".legendtext").first).to_be_attached()
        legend = chart.locator(".legendtext").all_text_contents()
        for split in ("training", "validation"):
            for series in ("raw", "smoothed"):
                assert f"{split} · {series}" in legend, legend
    check_page(page, "3-curves")
    step("curves")

    # Evaluate: the held-out test split and its confusion matrix.
    go_to(page, "Evaluate")
    page.get_by_role("button", name="Evaluate on the test split").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Test accuracy")).to_be_visible(
        timeout=120_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="Test images")).to_contain_text("27")
    matrix = page.get_by_test_id("stPlotlyChart").filter(
        has=page.locator(".gtitle", has_text="Confusion matrix"))
    expect(matrix).to_be_visible()
    for name in CLASSES:
        expect(matrix.locator(".xtick", has_text=name)).to_have_count(1)
        expect(matrix.locator(".ytick", has_text=name)).to_have_count(1)
    check_page(page, "4-evaluate")
    step("evaluated")

    # Predict: a photo gets a class and a probability; a text file gets a polite message.
    go_to(page, "Predict")
    photo, notes = tmp_path / "lake.png", tmp_path / "notes.txt"
    Image.new("RGB", (96, 96), (40, 110, 210)).save(photo)
    notes.write_text("not a photo\n")
    uploader = page.get_by_test_id("stFileUploader").locator("input[type=file]")
    uploader.set_input_files(photo)
    verdict = page.get_by_test_id("stMain").locator("h3")
    expect(verdict).to_have_text(re.compile(rf"^({'|'.join(CLASSES)}) · \d+\.\d%$"),
                                 timeout=60_000)
    # Grad-CAM: the one-colour photo comes back with a heatmap over it, which the slider fades.
    expect(page.get_by_text("Heatmap opacity")).to_be_visible()
    shown = page.get_by_test_id("stMain").get_by_test_id("stImage").first.locator("img")
    overlaid = np.asarray(Image.open(io.BytesIO(shown.screenshot())).convert("RGB"), float)
    assert overlaid.std(axis=(0, 1)).max() > 5, "a heatmap varies over the uniform photo"
    uploader.set_input_files(notes)  # the uploader keeps the photo and adds this file
    # (The one-colour photo may also be called "none of these": its own warning, not this one.)
    warning = page.get_by_test_id("stAlertContentWarning").filter(has_text="notes.txt")
    expect(warning).to_contain_text("Sorry, notes.txt is not an image", timeout=60_000)
    expect(verdict).to_have_count(1)
    check_page(page, "5-predict")
    step("predicted")

    assert page.watcher.unexpected_external() == [], "requests to other hosts (must work offline)"
