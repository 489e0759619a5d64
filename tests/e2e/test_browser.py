"""A real browser walks the app end to end, as a student would: demo set, a fast run on a tiny
backbone (reloading the tab while it trains), curves, test evaluation and predictions.

Every page is checked for a Streamlit exception box, traceback text, error messages and browser
console errors, and saved as a screenshot in test-artifacts/screenshots/ (and in
$TRANSFER_LAB_SCREENSHOTS when set: `scripts/readme-screenshots` refreshes docs/screenshots/).
"""

from __future__ import annotations

import json
import re
import time

from PIL import Image
from playwright.sync_api import Page, expect

# The fastest combination the Train page offers: random weights need no download, and at 32 px
# VGG16's features are 1 × 1 × 512, so extraction and three epochs take seconds on a CPU.
RUN_SETTINGS = {"backbone": "vgg16", "image_size": 32, "weights": "none",
                "strategy": "feature_extraction", "epochs": 3, "learning_rate": 1e-3}
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


def check_page(page: Page, name: str, screenshot) -> None:
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


def test_a_student_tours_the_app(page: Page, app, screenshot, tmp_path):
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
    expect(page.get_by_test_id("stSidebar")).to_contain_text("train 126 · validation 27 · test 27")
    expect(page.get_by_role("heading", name="Sample photos")).to_be_visible()
    for name in CLASSES:
        expect(page.get_by_text(f"{name} · train", exact=True)).to_be_visible()
    settle(page)
    assert page.locator('[data-testid="stImage"] img').count() >= 8 * len(CLASSES)
    check_page(page, "1-dataset", screenshot)
    step("split saved")

    # Train: the fastest run the page offers.
    go_to(page, "Train")
    step("DBG nav train")
    settle(page, timeout=120)  # it measures the default backbone on this machine
    page.get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
    page.get_by_role("option", name="VGG16", exact=True).click()
    settle(page, timeout=120)
    step("DBG vgg")
    set_number(page, "Image size (pixels)", RUN_SETTINGS["image_size"])
    step("DBG size")
    page.get_by_text("none (random: for testing only)", exact=True).click()
    settle(page)
    page.get_by_test_id("stRadio").filter(has_text="Strategy").get_by_text(
        "feature extraction", exact=True).click()
    settle(page)
    set_number(page, "Epochs", RUN_SETTINGS["epochs"])
    set_number(page, "Learning rate", "1e-3")
    check_page(page, "2-train", screenshot)
    step("run configured")

    page.get_by_role("button", name="Start training").click()
    run_heading = page.get_by_role("heading", name=re.compile(r"^Run \S+-vgg16-feature_extraction"))
    expect(run_heading).to_be_visible()
    run_name = run_heading.inner_text().removeprefix("Run ").strip()
    config = json.loads((app.workspace / "runs" / run_name / "config.json").read_text())
    assert {k: config[k] for k in RUN_SETTINGS} == RUN_SETTINGS, "the form's values reach the run"
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text(run_name)
    progress = page.get_by_test_id("stMain").get_by_test_id("stProgress")
    expect(progress).to_be_visible(timeout=120_000)  # the worker process imports TensorFlow
    step("training")
    screenshot(page, "2-train-running")
    step("DBG shot")

    # Reload the tab while it trains: the run lives in its own process and folder, not the tab.
    page.reload()
    step("DBG reload")
    expect(page.get_by_role("heading", name=f"Run {run_name}")).to_be_visible(timeout=60_000)
    step("DBG heading")
    expect(progress).to_be_visible()
    expect(sidebar).to_contain_text(run_name)
    step("reloaded, still training")
    expect(page.get_by_text("Finished. The best epoch's model is saved.")).to_be_visible(
        timeout=150_000)
    expect(sidebar).to_contain_text("finished")
    check_page(page, "2-train-finished", screenshot)
    step("run finished")

    # Curves: raw points and smoothed lines, for training and validation, in both charts.
    go_to(page, "Curves")
    charts = page.get_by_test_id("stPlotlyChart")
    expect(charts).to_have_count(2)
    for chart in (charts.nth(0), charts.nth(1)):
        expect(chart.locator(".legendtext").first).to_be_attached()
        legend = chart.locator(".legendtext").all_text_contents()
        for split in ("training", "validation"):
            for series in ("raw", "smoothed"):
                assert f"{run_name} · {split} · {series}" in legend, legend
    check_page(page, "3-curves", screenshot)
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
    check_page(page, "4-evaluate", screenshot)
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
    uploader.set_input_files(notes)  # the uploader keeps the photo and adds this file
    warning = page.get_by_test_id("stAlertContentWarning")
    expect(warning).to_contain_text("notes.txt could not be read as a photo", timeout=60_000)
    expect(verdict).to_have_count(1)
    check_page(page, "5-predict", screenshot)
    step("predicted")

    assert page.watcher.unexpected_external() == [], "requests to other hosts (must work offline)"
