"""A real browser in a phone-sized window (390 × 844) makes a dataset as a student would: two
classes from uploaded photos, one photo from the camera (Chromium's fake camera), a reload that
finds everything still there, then the split.

Uses the app, Chromium and helpers of test_browser.py; its own browser, started with Chromium's
fake camera that needs no permission prompt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from test_browser import (ARTIFACTS, CHROMIUM_ARGS, App, Steps, app,  # noqa: F401
                          chromium_path, settle, watched_page)

PHONE = {"width": 390, "height": 844}
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture
def phone(chromium_path, app):  # noqa: F811
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                             args=CHROMIUM_ARGS + FAKE_CAMERA)
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        context.grant_permissions(["camera"], origin=app.url)
        yield watched_page(context, app.url)
        context.close()
        browser.close()


def no_errors(page: Page, name: str) -> None:
    settle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    assert page.watcher.errors == [], f"{name}: browser console errors"
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"phone-{name}.png"), full_page=True)


def type_and_click(page: Page, label: str, text: str, button: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(text)
    field.press("Enter")
    settle(page)
    page.get_by_role("button", name=button, exact=True).click()
    settle(page)


def photos(folder: Path, rgb, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        path = folder / f"IMG_{i}.png"
        Image.new("RGB", (64 + i, 64), tuple(min(255, c + 9 * i) for c in rgb)).save(path)
        made.append(path)
    return made


def test_a_dataset_made_on_a_phone_survives_a_reload(phone: Page, app: App,  # noqa: F811
                                                      tmp_path):
    try:
        make_on_a_phone(phone, app, tmp_path)
    except BaseException:
        print(f"streamlit log (tail), all of it in {app.log_path}:\n{app.log()}")
        phone.screenshot(path=str(ARTIFACTS / "screenshots" / "phone-failure.png"),
                         full_page=True)
        raise


def make_on_a_phone(page: Page, app: App, tmp_path: Path) -> None:
    step = Steps()
    page.goto(app.url)
    expect(page.get_by_role("heading", name="Dataset", exact=True)).to_be_visible(timeout=60_000)
    settle(page)
    page.get_by_test_id("stRadio").get_by_text("Make your own", exact=True).click()
    settle(page)
    type_and_click(page, "Name of the new dataset", "pen vs mug", "Create the dataset")
    for name in ("pen", "mug"):
        type_and_click(page, "New class", name, "Add class")
    expect(page.get_by_text("pen · 0 photos")).to_be_visible()
    step("dataset and classes made")

    for name, rgb in (("pen", (200, 40, 30)), ("mug", (30, 60, 200))):
        box = page.get_by_test_id("stFileUploader").filter(has_text=f"Add photos to {name}")
        box.locator("input[type=file]").set_input_files(photos(tmp_path / name, rgb, 4))
        expect(page.get_by_text(f"{name} · 4 photos")).to_be_visible(timeout=60_000)
        settle(page)
    step("photos uploaded")

    # The camera: Chromium's fake device, no prompt. Take one photo of the pen.
    pen = page.get_by_test_id("stExpander").filter(has_text="pen · 4 photos")
    pen.get_by_test_id("stCheckbox").filter(has_text="Use the camera").click()
    settle(page)
    take = pen.get_by_test_id("stCameraInput").get_by_role("button", name="Take Photo")
    expect(take).to_be_enabled(timeout=30_000)
    page.wait_for_timeout(1500)  # the fake stream's first frames
    take.click()
    expect(page.get_by_text("pen · 5 photos")).to_be_visible(timeout=60_000)
    no_errors(page, "own-made")
    step("camera photo added")

    folder = app.workspace / "datasets" / "own" / "pen vs mug"
    assert sorted(p.parent.name for p in folder.glob("*/*.*")).count("pen") == 5
    assert [p.suffix for p in (folder / "pen").iterdir()].count(".jpg") == 1  # the camera's

    # A reload is a new session: reopen the dataset by name, everything is there.
    page.reload()
    expect(page.get_by_role("heading", name="Dataset", exact=True)).to_be_visible(timeout=60_000)
    settle(page)
    page.get_by_test_id("stRadio").get_by_text("Make your own", exact=True).click()
    settle(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Your dataset").click()
    page.get_by_role("option", name="pen vs mug", exact=True).click()
    settle(page)
    expect(page.get_by_text("pen · 5 photos")).to_be_visible()
    expect(page.get_by_text("mug · 4 photos")).to_be_visible()
    expect(page.get_by_test_id("stMetric").filter(has_text="pen")).to_contain_text("5 usable",
                                                                                  timeout=60_000)
    step("reloaded, all there")

    settle(page, timeout=120)  # the augmentation preview imports TensorFlow
    page.get_by_role("button", name="Save this split").click()
    expect(page.get_by_text("It is now the current dataset")).to_be_visible(timeout=60_000)
    no_errors(page, "own-split")
    saved = list((app.workspace / "manifests").glob("*.json"))
    assert len(saved) == 1 and "fractions" in saved[0].name
    assert page.watcher.unexpected_external() == [], "requests to other hosts"
    step("split saved")
