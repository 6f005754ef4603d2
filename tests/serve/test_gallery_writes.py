"""Adding to and removing from a served gallery, the write token, and what the service refuses."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from csetgraph.data import get_dataset
from csetgraph.data.records import load_image
from csetgraph.serve import create_app, decode_upload
from csetgraph.serve.app import BodyLimit

AUTH = {"Authorization": "Bearer test-write-token"}  # the `writable` fixture's token


def _vis(tiny_run, split):
    return get_dataset("sysu_mm01").all_records(tiny_run["cfg"].data.root, split=split)["vis"]


def _add(client, paths, camid=4, **form):
    files = [("image", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]
    data = {"modality": "vis", "camid": str(camid), **{k: str(v) for k, v in form.items()}}
    return client.post("/gallery", files=files, data=data, headers=AUTH)


def _search(client, path, k=3):
    files = {"image": ("q.jpg", Path(path).read_bytes(), "image/jpeg")}
    reply = client.post("/search", files=files, data={"modality": "vis", "k": str(k)})
    assert reply.status_code == 200, reply.text
    return reply.json()["results"]


def test_added_people_are_searchable_at_once_and_removed_ones_gone(writable, tiny_run):
    searcher, app = writable
    client = TestClient(app)
    before = client.get("/health").json()
    assert before["writable"] and before["last_added"] is None
    new = _vis(tiny_run, "val")[:3]  # people the gallery (test split) does not hold
    reply = _add(client, [r.path for r in new], camid=4, pid=77, time="2026-12-04T10:00:00")
    assert reply.status_code == 200, reply.text
    added = reply.json()["added"]
    assert len(added) == 3 and reply.json()["size"] == before["size"] + 3
    health = client.get("/health").json()
    assert health["size"] == before["size"] + 3 and health["last_added"]
    for rec, item in zip(new, added, strict=True):
        top = _search(client, rec.path)[0]
        # Itself, at distance 0 (the same file through the same loader and model).
        assert top["id"] == item["id"] and top["distance"] == pytest.approx(0.0, abs=1e-5)
        assert top["pid"] == 77 and top["camid"] == 4 and top["path"].startswith("uploads/")
        image = client.get(f"/gallery/{item['id']}")
        assert image.status_code == 200 and image.content == Path(rec.path).read_bytes()
    stored = searcher.index.item(added[0]["id"])
    assert stored["time"] == "2026-12-04T10:00:00" and stored["name"] == Path(new[0].path).name
    gone = client.delete(f"/gallery/{added[0]['id']}", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["size"] == before["size"] + 2
    assert added[0]["id"] not in [r["id"] for r in _search(client, new[0].path, k=50)]
    assert client.get(f"/gallery/{added[0]['id']}").status_code == 404
    assert not Path(stored["path"]).exists()  # the uploaded image goes with its entry
    again = client.delete(f"/gallery/{added[0]['id']}", headers=AUTH)
    assert again.status_code == 404 and "no gallery item" in again.json()["detail"]


def test_writes_need_the_token(writable, searcher, tiny_run):
    _, app = writable
    client = TestClient(app)
    path = _vis(tiny_run, "val")[0].path
    files = {"image": ("a.jpg", Path(path).read_bytes(), "image/jpeg")}
    form = {"modality": "vis", "camid": "1"}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": AUTH["Authorization"].split()[1]},
    ):
        reply = client.post("/gallery", files=files, data=form, headers=headers)
        assert reply.status_code == 401 and "write token" in reply.json()["detail"]
    assert client.delete("/gallery/0", headers={"Authorization": "Bearer nope"}).status_code == 401
    read_only = TestClient(create_app(searcher, []))
    reply = read_only.post("/gallery", files=files, data=form, headers=AUTH)
    assert reply.status_code == 403 and "--write-token" in reply.json()["detail"]
    assert read_only.delete("/gallery/0", headers=AUTH).status_code == 403


@pytest.mark.parametrize(
    "form,status,needle",
    [
        ({"modality": "ir", "camid": "1"}, 400, "this gallery holds vis images"),
        ({"modality": "rgb", "camid": "1"}, 422, "modality"),
        ({"modality": "vis", "camid": "-3"}, 422, "camid must be"),
    ],
)
def test_bad_additions_are_refused(writable, tiny_run, form, status, needle):
    searcher, app = writable
    size = len(searcher.index)
    path = _vis(tiny_run, "val")[0].path
    files = {"image": ("a.jpg", Path(path).read_bytes(), "image/jpeg")}
    reply = TestClient(app).post("/gallery", files=files, data=form, headers=AUTH)
    assert reply.status_code == status and needle in reply.json()["detail"]
    assert len(searcher.index) == size


def test_gallery_files_only_from_the_gallery_roots(index_copy, tiny_run, tmp_path):
    """A tampered metadata.json (a path outside, a symlink out) does not hand out files."""
    from csetgraph.deploy.searcher import GallerySearcher

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    root = Path(tiny_run["cfg"].data.root)
    link = index_copy / "uploads" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(secret)
    items = json.loads((index_copy / "metadata.json").read_text())
    items[0]["path"] = str(secret)
    items[1]["path"] = str(link)
    items[2]["path"] = str(root / ".." / secret.name)  # a ../ path
    (index_copy / "metadata.json").write_text(json.dumps(items))
    client = TestClient(create_app(GallerySearcher.from_folder(index_copy), []))
    for i in (0, 1, 2):
        reply = client.get(f"/gallery/{items[i]['id']}")
        assert reply.status_code == 404 and "outside the gallery" in reply.json()["detail"]
        assert "not for the web" not in reply.text
    assert client.get(f"/gallery/{items[3]['id']}").status_code == 200  # untouched items


def test_absolute_paths_and_docs_only_when_asked(searcher, tiny_run):
    query = get_dataset("sysu_mm01").all_records(tiny_run["cfg"].data.root, split="test")["ir"][0]
    files = {"image": ("q.jpg", Path(query.path).read_bytes(), "image/jpeg")}
    closed = TestClient(create_app(searcher, []))
    assert closed.get("/docs").status_code == 404 and closed.get("/openapi.json").status_code == 404
    opened = TestClient(create_app(searcher, [], docs=True, absolute_paths=True))
    assert opened.get("/docs").status_code == 200
    assert "/gallery/{item_id}" in opened.get("/openapi.json").json()["paths"]
    result = opened.post("/search", files=files, data={"modality": "ir"}).json()["results"][0]
    assert Path(result["absolute_path"]).is_file()
    assert result["absolute_path"].endswith(result["path"]) and not result["path"].startswith("/")


def test_pixel_cap_is_configurable_and_read_from_the_header(searcher):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    client = TestClient(create_app(searcher, [], max_pixels=1000))
    reply = client.post(
        "/search", files={"image": ("q.png", buf.getvalue(), "image/png")}, data={"modality": "ir"}
    )
    assert reply.status_code == 413 and "more than 1,000 pixels" in reply.json()["detail"]


def test_uploads_decode_through_the_shared_loader(tmp_path):
    """The service's decoding is load_image's: a 16-bit thermal PNG gives the same pixels."""
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(64, 32) * 11 + 1200).astype(np.uint16)
    path = tmp_path / "thermal16.png"
    Image.fromarray(ramp).save(path)
    served = decode_upload(path.read_bytes())
    np.testing.assert_array_equal(np.asarray(served), np.asarray(load_image(path)))


def test_oversized_bodies_are_refused_before_the_app_reads_them():
    """BodyLimit answers 413 from the Content-Length header; the app is never called."""
    called, sent = [], []

    async def inner(scope, receive, send):
        called.append(scope["path"])

    async def receive():
        raise AssertionError("the body must not be read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/search"}
    limited = BodyLimit(inner, limit=lambda path: 1000)
    asyncio.run(limited({**scope, "headers": [(b"content-length", b"5000")]}, receive, send))
    assert not called and sent[0]["status"] == 413
    assert "larger than 1,000 bytes" in json.loads(sent[1]["body"])["detail"]
    body = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2

    async def chunks():
        return body.pop()

    async def reader(scope, receive, send):  # an app that reads the whole body
        while (await receive()).get("more_body"):
            pass

    sent.clear()
    asyncio.run(BodyLimit(reader, limit=lambda path: 1000)({**scope, "headers": []}, chunks, send))
    assert sent[0]["status"] == 413  # a body without Content-Length is cut at the limit


def test_the_service_on_milvus_lite_adds_searches_and_removes(tiny_run, tmp_path):
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    from csetgraph.commands.index import main as index_main
    from csetgraph.deploy.searcher import GallerySearcher

    folder = tmp_path / "mv"
    argv = [str(tiny_run["dir"]), "--split", "test", "--modality", "vis", "--no-progress"]
    assert index_main([*argv, "--output", str(folder), "--store", str(tmp_path / "g.db")]) == 0
    live = GallerySearcher.from_folder(folder, writable=True)
    try:
        client = TestClient(create_app(live, [], write_token="test-write-token"))
        health = client.get("/health").json()
        assert health["store"] == "milvus" and health["size"] == 48
        person = _vis(tiny_run, "val")[0].path
        reply = _add(client, [person], camid=6)
        assert reply.status_code == 200, reply.text
        new_id = reply.json()["added"][0]["id"]
        top = _search(client, person)[0]
        assert top["id"] == new_id and top["camid"] == 6
        assert client.get(f"/gallery/{new_id}").content == Path(person).read_bytes()
        assert client.delete(f"/gallery/{new_id}", headers=AUTH).json()["size"] == 48
        assert new_id not in [r["id"] for r in _search(client, person, k=50)]
    finally:
        live.index.drop()
        live.index.close()
