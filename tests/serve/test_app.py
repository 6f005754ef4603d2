"""The service through FastAPI's TestClient: answers against numpy, and refused requests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from csetgraph.data import get_dataset
from csetgraph.data.records import load_image
from csetgraph.engine.runs import eval_transform
from csetgraph.serve import create_app


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def _records(tiny_run):
    return get_dataset("sysu_mm01").all_records(tiny_run["cfg"].data.root, split="test")


def _relative(tiny_run, path):
    return Path(path).resolve().relative_to(Path(tiny_run["cfg"].data.root).resolve()).as_posix()


def _reference(tiny_run, query_path, camid=None):
    """Brute-force ranking: 1 - cos against every visible test image, SYSU camera rule.

    Returns the paths relative to the data set's root (what the service answers)."""
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    tf = eval_transform(model, cfg)
    gallery = _records(tiny_run)["vis"]
    g = model.embed(torch.stack([tf(load_image(r.path)) for r in gallery]), "vis").numpy()
    q = model.embed(tf(load_image(query_path))[None], "ir").numpy()[0]
    dist = 1.0 - g.astype(np.float64) @ q.astype(np.float64)
    order = [j for j in np.argsort(dist) if not (camid == 3 and gallery[j].camid == 2)]
    return [_relative(tiny_run, gallery[j].path) for j in order], dist[order]


def test_health_and_page(client, tiny_run):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["size"] == len(_records(tiny_run)["vis"])
    assert health["modality"] == "vis" and health["kind"] == "flat"
    assert isinstance(health["threshold"], float) and health["examples"] > 0
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="results"' in page.text and "/search" in page.text


def test_upload_search_equals_numpy(client, tiny_run):
    query = _records(tiny_run)["ir"][0]
    data = Path(query.path).read_bytes()
    reply = client.post(
        "/search",
        files={"image": ("q.jpg", data, "image/jpeg")},
        data={"modality": "ir", "k": "6", "camid": "3"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    paths, dist = _reference(tiny_run, query.path, camid=3)
    assert [r["path"] for r in body["results"]] == paths[:6]
    np.testing.assert_allclose([r["distance"] for r in body["results"]], dist[:6], atol=1e-5)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5, 6]
    for r in body["results"]:
        assert {"rank", "id", "path", "pid", "camid", "distance"} <= set(r)
    assert body["no_match"] == (dist[0] > body["threshold"])
    # No absolute server path leaves the service unless the operator asks for it.
    assert str(Path(tiny_run["cfg"].data.root).resolve()) not in reply.text
    assert "absolute_path" not in body["results"][0]


def test_example_search_knows_the_query_identity(client, app, tiny_run):
    examples = client.get("/examples").json()
    assert examples and all(e["modality"] == "ir" for e in examples)
    first = examples[0]
    reply = client.post("/search", data={"modality": "ir", "k": "4", "example": str(first["id"])})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["query"]["pid"] == first["pid"] and body["query"]["camid"] == first["camid"]
    example_path = [r for r in _records(tiny_run)["ir"] if Path(r.path).name == first["name"]]
    paths, _ = _reference(tiny_run, example_path[0].path, camid=first["camid"])
    assert [r["path"] for r in body["results"]] == paths[:4]
    image = client.get(f"/examples/{first['id']}")
    assert image.status_code == 200 and image.content == Path(example_path[0].path).read_bytes()


def test_gallery_images(client, searcher):
    item = searcher.index.item(3)
    reply = client.get("/gallery/3")
    assert reply.status_code == 200 and reply.content == Path(item["path"]).read_bytes()
    for item_id in searcher.index.ids:  # every gallery file lies under the data set's root
        assert client.get(f"/gallery/{item_id}").status_code == 200
    missing = client.get(f"/gallery/{len(searcher.index)}")
    assert missing.status_code == 404 and "no gallery item" in missing.json()["detail"]


def _png(size, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "files,data,status,needle",
    [
        ({"image": ("q.txt", b"hello, not an image", "text/plain")}, {}, 400, "not an image"),
        ({"image": ("q.jpg", b"", "image/jpeg")}, {}, 400, "empty"),
        ({"image": ("q.png", _png((8000, 6000), "1"), "image/png")}, {}, 413, "pixels"),
        ({"image": ("q.png", _png((16, 32)), "image/png")}, {"modality": "rgb"}, 422, "modality"),
        ({"image": ("q.png", _png((16, 32)), "image/png")}, {"k": "0"}, 422, "k must be"),
        ({}, {}, 422, "send an image"),
        ({}, {"example": "9999"}, 422, "no example"),
    ],
)
def test_bad_requests_get_4xx_and_the_server_goes_on(client, files, data, status, needle):
    form = {"modality": "ir", "k": "3", **data}
    reply = client.post("/search", files=files or None, data=form)
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["detail"]
    ok = client.post(
        "/search",
        files={"image": ("q.png", _png((16, 32)), "image/png")},
        data={"modality": "ir", "k": "3"},
    )
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_huge_upload_is_refused(searcher):
    small = TestClient(create_app(searcher, [], max_upload_bytes=1000))
    reply = small.post(
        "/search",
        files={"image": ("q.png", b"\x89PNG" + b"0" * 5000, "image/png")},
        data={"modality": "ir"},
    )
    assert reply.status_code == 413 and "larger than" in reply.json()["detail"]


def test_serve_command_refuses_a_folder_without_an_index(tmp_path, capsys):
    from csetgraph.commands.serve import main

    assert main([str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "csetgraph serve: error:" in err[0] and "not a gallery index" in err[0]


def test_examples_alternate_identities(app, client):
    examples = client.get("/examples").json()
    pids = [e["pid"] for e in examples]
    distinct = len(set(pids))
    assert distinct > 1 and len(set(pids[:distinct])) == distinct  # every identity once first
