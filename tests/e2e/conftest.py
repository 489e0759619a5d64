"""The browser test's machinery: Debian's Chromium, the app served as a user starts it, a page
that records console errors, and full-page screenshots.

Playwright drives the system's Chromium (`/usr/bin/chromium`, which `./test` installs when it can);
Playwright's own browser download is not used. Without Chromium the test fails in CI (CI=true)
and is skipped elsewhere, with the reason.
"""

from __future__ import annotations

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

import pytest

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
    (re.compile(r"404"), re.compile(r"^http://127\.0\.0\.1:\d+/[\w-]+/_stcore/(health|host-config)$")),
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
    candidates = [os.environ.get("TRANSFER_LAB_CHROMIUM"), "/usr/bin/chromium",
                  shutil.which("chromium")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        reason = ("Chromium not found (/usr/bin/chromium, `chromium` on PATH or "
                  "TRANSFER_LAB_CHROMIUM): the browser test cannot run. `./test` installs it with "
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
                raise RuntimeError(f"streamlit exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"streamlit did not serve {self.url} within {timeout:.0f} s:\n{self.log()}")

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
        import json

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
    from playwright.sync_api import sync_playwright

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
    page = context.new_page()
    page.set_default_timeout(30_000)
    watcher = Watcher()
    page.on("console", watcher.on_console)
    page.on("pageerror", watcher.on_page_error)

    def route(route):
        url = route.request.url
        if url.startswith(app.url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            watcher.external.append(url)
            route.abort()

    context.route("**/*", route)
    page.watcher = watcher
    yield page
    context.close()


@pytest.fixture(name="screenshot")
def screenshot_fixture():
    """`screenshot(page, name)` for the tests (a fixture: tests/e2e is not a package)."""
    return screenshot


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and "page" in item.funcargs:
        try:
            screenshot(item.funcargs["page"], "failure", publish=False)
            report.sections.append(("browser", "screenshot: test-artifacts/screenshots/failure.png"))
        except Exception as exc:  # the browser may be what failed
            report.sections.append(("browser", f"no failure screenshot: {exc}"))
        app = item.funcargs.get("app")
        if app is not None:
            report.sections.append(("streamlit log (tail)", app.log()))
    return report
