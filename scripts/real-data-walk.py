"""The browser walk on the real photos (not in CI: minutes of CPU, and the photos stay local).

Chapter split of ../shared/data/dogs-vs-cats, MobileNetV2 with the offline ImageNet weights,
fast feature extraction, curves, test evaluation, and a cat and a dog photo on Predict.
Screenshots go to test-artifacts/real-walk/ (never commit them: the photos' licence forbids
re-publishing). Usage: .venv/bin/python scripts/real-data-walk.py [EPOCHS]
"""

import os
import re
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests" / "e2e"))
SHARED = PROJECT.parent / "shared"
os.environ.setdefault("KERAS_HOME", str(SHARED / "keras-home"))

from playwright.sync_api import expect, sync_playwright  # noqa: E402
from test_browser import CHROMIUM_ARGS, VIEWPORT, App, go_to, set_number, settle  # noqa: E402

OUT = PROJECT / "test-artifacts" / "real-walk"
DATA = SHARED / "data" / "dogs-vs-cats"


def shot(page, name):
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def main(epochs: int = 10) -> None:
    started = time.monotonic()
    os.environ["TRANSFER_LAB_ROOTS"] = str(DATA)  # the app may open this folder
    workspace = Path(tempfile.mkdtemp(prefix="real-walk-"))
    app = App(workspace, OUT / "streamlit.log")
    try:
        app.wait_until_serving()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(app.url)
            settle(page)
            page.get_by_text("Folder on this server", exact=True).click()
            settle(page)
            field = page.get_by_role("textbox", name="Folder on the server")
            field.fill(str(DATA))
            field.press("Enter")
            settle(page)
            page.get_by_role("button", name="Use this folder").click()
            settle(page, timeout=120)
            expect(page.get_by_text("4000 usable").first).to_be_visible()
            page.get_by_role("button", name="Save this split").click()
            settle(page)
            shot(page, "1-dataset")
            print(f"{time.monotonic() - started:.0f} s: split saved", flush=True)

            go_to(page, "Train")
            settle(page, timeout=180)
            page.get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
            page.get_by_role("option", name="MobileNetV2", exact=True).click()
            settle(page, timeout=180)
            set_number(page, "Epochs", epochs)
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text("Finished.")).to_be_visible(timeout=3_600_000)
            settle(page)
            shot(page, "2-train")
            print(f"{time.monotonic() - started:.0f} s: trained", flush=True)

            go_to(page, "Curves")
            shot(page, "3-curves")
            go_to(page, "Evaluate")
            page.get_by_role("button", name="Evaluate on the test split").click()
            expect(page.get_by_text("Test accuracy")).to_be_visible(timeout=1_200_000)
            settle(page)
            accuracy = page.get_by_test_id("stMetric").first.inner_text()
            shot(page, "4-evaluate")
            print(f"{time.monotonic() - started:.0f} s: {accuracy!r}", flush=True)

            go_to(page, "Predict")
            page.locator('input[type="file"]').set_input_files(
                [str(DATA / "cat.3999.jpg"), str(DATA / "dog.3999.jpg")])
            headings = page.get_by_role("heading", name=re.compile(r"^(cat|dog) · "))
            expect(headings).to_have_count(2, timeout=120_000)
            print("predictions:", headings.all_inner_texts(), flush=True)
            shot(page, "5-predict")
            browser.close()
    finally:
        app.stop()
    print(f"{time.monotonic() - started:.0f} s in all; screenshots in {OUT}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
