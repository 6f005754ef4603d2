"""The page end to end in headless Chromium (Debian's ``chromium``, driven by Playwright).

Skipped, with the reason, when Chromium or Playwright is missing; ``.ci/run`` installs
Chromium so CI runs it. ``CSETGRAPH_SCREENSHOT=docs/img/serve.png`` keeps the screenshot
for the README.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app):
    """The app under uvicorn on a free loopback port, in a thread; stopped after the module."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
                ".length === 5",
                timeout=30_000,
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("CSETGRAPH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
