"""The page end to end in headless Chromium (Debian's ``chromium``, driven by Playwright).

Skipped, with the reason, when Chromium or Playwright is missing; ``.ci/run`` installs
Chromium so CI runs it. ``CSETGRAPH_SCREENSHOT=docs/img/serve.png`` keeps the desktop
screenshot for the README, ``CSETGRAPH_SCREENSHOT_PHONE=docs/img/serve-phone.png`` the
phone-sized one (390 px wide).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (the .ci/run script does)",
)


@pytest.fixture(scope="module")
def server(app, serve_thread):
    """The app under uvicorn on a socket bound to port 0, in a thread; stopped after the module."""
    with serve_thread(app) as url:
        yield url


def test_upload_shows_k_ranked_results(server, tiny_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from csetgraph.data import get_dataset

    query = get_dataset("sysu_mm01").all_records(tiny_run["cfg"].data.root, split="test")["ir"][0]
    shot = tmp_path / "serve.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            page.goto(server, timeout=30_000)
            page.wait_for_selector("#examples img", timeout=30_000)
            assert "gallery images" in page.inner_text("#status")
            page.set_input_files("#image", query.path)
            page.select_option("#modality", "ir")
            page.fill("#k", "5")
            page.click("#search")
            page.wait_for_function(
                "document.querySelectorAll('#results .result').length === 5", timeout=30_000
            )
            assert page.inner_text("#error") == ""
            ranks = page.locator("#results .result").all_inner_texts()
            assert [r.split("·")[0].strip() for r in ranks] == ["#1", "#2", "#3", "#4", "#5"]
            # A picked example knows its identity: every result is framed green or red.
            page.click("#examples img >> nth=0")
            page.click("#search")
            page.wait_for_function(
                "document.querySelectorAll('#results .result.same, #results .result.other')"
                ".length === 5 && [...document.querySelectorAll('#results .result img')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("CSETGRAPH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


PHONE = {"width": 390, "height": 844}  # a phone's CSS pixels (iPhone 12-15)


def test_phone_adds_a_person_and_shows_results_uncut(writable, serve_thread, tiny_run, tmp_path):
    """At 390 px wide: add a person through the page (with the token), see the gallery size
    and last addition change, search with the same image and find it first; no result lies
    beyond the right edge and the page does not scroll sideways. Takes a phone screenshot."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from csetgraph.data import get_dataset

    _, app = writable
    person = get_dataset("sysu_mm01").all_records(tiny_run["cfg"].data.root, split="val")["vis"][0]
    shot = tmp_path / "serve-phone.png"
    with serve_thread(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport=PHONE, device_scale_factor=1, is_mobile=True)
            page.goto(url, timeout=30_000)
            page.wait_for_function("document.getElementById('size').textContent !== '?'")
            size = int(page.inner_text("#size"))
            assert page.inner_text("#last-added") == "none"
            page.set_input_files("#add-image", person.path)
            page.fill("#add-camid", "4")
            page.fill("#token", "test-write-token")
            page.click("#add")
            page.wait_for_function(
                "document.getElementById('add-status').textContent.startsWith('added 1')",
                timeout=30_000,
            )
            assert page.inner_text("#add-error") == ""
            assert int(page.inner_text("#size")) == size + 1
            assert page.inner_text("#last-added") != "none"
            added_id = int(page.inner_text("#add-status").split("id ")[1])
            page.set_input_files("#image", person.path)
            page.select_option("#modality", "vis")
            page.fill("#k", "6")
            page.click("#search")
            page.wait_for_function(
                "document.querySelectorAll('#results .result img').length === 6 && [...document"
                ".querySelectorAll('#results .result img')].every(i => i.naturalWidth > 0)",
                timeout=30_000,
            )
            first = page.locator("#results .result img").first.get_attribute("src")
            assert first == f"/gallery/{added_id}"
            right = page.evaluate(
                "Math.max(...[...document.querySelectorAll('#results .result')]"
                ".map(e => e.getBoundingClientRect().right))"
            )
            assert right <= PHONE["width"], f"a result reaches {right} px on a 390 px screen"
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            page.locator("#results").scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("CSETGRAPH_SCREENSHOT_PHONE")
    if keep:
        shutil.copy(shot, keep)
