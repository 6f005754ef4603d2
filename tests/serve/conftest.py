"""An index of the session's tiny run and the service over it, built once for these tests;
helpers to run the service in a thread or in its own process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TOKEN = "test-write-token"


@pytest.fixture(scope="session")
def served_index(tiny_run, tmp_path_factory):
    """``csetgraph index`` of the tiny run's visible test images, calibrated: the folder."""
    from csetgraph.commands.index import main

    out = tmp_path_factory.mktemp("served") / "test-vis"
    argv = [str(tiny_run["dir"]), "--split", "test", "--modality", "vis", "--output", str(out)]
    assert main([*argv, "--calibrate", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def searcher(served_index):
    from csetgraph.deploy.searcher import GallerySearcher

    return GallerySearcher.from_folder(served_index)


@pytest.fixture(scope="session")
def app(searcher):
    from csetgraph.serve import create_app, query_examples

    return create_app(searcher, query_examples(searcher, 12))


@pytest.fixture
def index_copy(served_index, tmp_path):
    """A private copy of the served index folder, to add to and remove from."""
    return Path(shutil.copytree(served_index, tmp_path / "live"))


@pytest.fixture
def writable(index_copy):
    """``(searcher, app)`` over the copy, opened for durable writes, token ``TOKEN``."""
    from csetgraph.deploy.searcher import GallerySearcher
    from csetgraph.serve import create_app

    live = GallerySearcher.from_folder(index_copy, writable=True)
    yield live, create_app(live, [], write_token=TOKEN)
    live.index.close()


@contextlib.contextmanager
def thread_server(app):
    """``app`` under uvicorn in a thread, on a socket bound to port 0: yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def process_server(folder, *args: str, env: dict | None = None):
    """``csetgraph serve folder --port 0 ...`` in its own process: yields ``(process, url)``.

    The process is killed (SIGKILL) on exit if it still runs.
    """
    cmd = [
        sys.executable,
        "-m",
        "csetgraph",
        "serve",
        str(folder),
        "--port",
        "0",
        "--examples",
        "0",
    ]
    cmd += list(args)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        line = proc.stdout.readline()  # "serving N gallery images on http://H:P (...)"
        if "http://" not in line:
            proc.kill()
            pytest.fail(f"the server did not start: {line!r} {proc.stderr.read()[-2000:]}")
        yield proc, line.split()[line.split().index("on") + 1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture(scope="session")
def auth():
    """The header that carries the ``writable`` app's token."""
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def serve_thread():
    """:func:`thread_server`: ``with serve_thread(app) as url: ...``."""
    return thread_server


@pytest.fixture(scope="session")
def serve_process():
    """:func:`process_server`: ``with serve_process(folder, *args) as (proc, url): ...``."""
    return process_server
