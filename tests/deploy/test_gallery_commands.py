"""csetgraph index and search on the session's tiny run, against numpy rankings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from csetgraph.commands.index import main as index_main
from csetgraph.commands.search import main as search_main
from csetgraph.data import get_dataset
from csetgraph.data.records import load_image
from csetgraph.deploy.embedder import weights_fingerprint
from csetgraph.engine.runs import eval_transform, load_run
from csetgraph.retrieval import GalleryIndex


def _embed(model, cfg, records, modality):
    tf = eval_transform(model, cfg)
    return model.embed(torch.stack([tf(load_image(r.path)) for r in records]), modality).numpy()


def _split(cfg, split):
    return get_dataset("sysu_mm01").all_records(cfg.data.root, split=split)


def test_index_holds_the_split_its_model_and_the_camera_rule(vis_index, tiny_run):
    index = GalleryIndex.load(vis_index)
    records = _split(tiny_run["cfg"], "test")["vis"]
    assert [m["path"] for m in index.metadata] == [r.path for r in records]
    assert [m["pid"] for m in index.metadata] == [r.pid for r in records]
    man = index.manifest
    reloaded, _ = load_run(tiny_run["dir"])
    assert man.model["weights"] == weights_fingerprint(reloaded)  # same weights, same digest
    with torch.no_grad():
        reloaded.neck.bn.weight.add_(1e-3)
    assert weights_fingerprint(reloaded) != man.model["weights"]
    assert man.exclude_cameras == {"3": [2]}  # SYSU-MM01: camera 3 never sees camera 2
    assert man.source["split"] == "test" and man.preprocess["modality"] == "vis"
    assert (man.preprocess["height"], man.preprocess["width"]) == (32, 16)


def test_threshold_is_calibrated_on_val_by_hand(vis_index, tiny_run):
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    val = _split(cfg, "val")
    g = _embed(model, cfg, val["vis"], "vis").astype(np.float64)
    q = _embed(model, cfg, val["ir"], "ir").astype(np.float64)
    impostor = []
    for i, rq in enumerate(val["ir"]):
        for j, rg in enumerate(val["vis"]):
            if rq.pid != rg.pid:
                impostor.append(1.0 - float(q[i] @ g[j]))
    impostor.sort()
    m = int(0.01 * len(impostor))
    manifest = json.loads((vis_index / "manifest.json").read_text())
    assert manifest["threshold"] == pytest.approx(impostor[m], abs=1e-5)
    assert manifest["threshold"] < impostor[m] + 1e-6
    assert manifest["calibration"]["impostor_pairs"] == len(impostor)


def test_search_json_equals_numpy_ranking(vis_index, tiny_run, capsys):
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    test = _split(cfg, "test")
    gallery = _embed(model, cfg, test["vis"], "vis").astype(np.float64)
    query = next(r for r in test["ir"] if r.camid == 3)
    q = _embed(model, cfg, [query], "ir")[0].astype(np.float64)
    dist = 1.0 - gallery @ q
    keep = [j for j in np.argsort(dist) if test["vis"][j].camid != 2][:7]
    argv = [str(vis_index), query.path, "--modality", "ir", "--k", "7", "--camid", "3", "--json"]
    assert search_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and out[0]["query"] == query.path
    results = out[0]["results"]
    assert [r["path"] for r in results] == [test["vis"][j].path for j in keep]
    np.testing.assert_allclose([r["distance"] for r in results], dist[keep], atol=1e-5)
    assert [r["rank"] for r in results] == list(range(1, 8))
    threshold = json.loads((vis_index / "manifest.json").read_text())["threshold"]
    assert out[0]["no_match"] == (dist[keep[0]] > threshold)
    assert [r["match"] for r in results] == [bool(d <= threshold) for d in dist[keep]]


def test_search_table(vis_index, tiny_run, capsys):
    query = _split(tiny_run["cfg"], "test")["ir"][0]
    assert (
        search_main([str(vis_index), query.path, query.path, "--modality", "ir", "--k", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count(f"query {query.path}") == 2 and "distance" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 6


def test_index_of_a_plain_folder(tiny_run, tmp_path, capsys):
    test = _split(tiny_run["cfg"], "test")
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i, rec in enumerate(test["ir"][:4]):
        shutil.copy(rec.path, folder / f"{i}.jpg")
    out = tmp_path / "idx"
    # An override before the run: positionals are accepted in any order.
    run = ["eval.batch_size=3", str(tiny_run["dir"])]
    argv = [*run, "--images", str(tmp_path / "photos"), "--modality", "ir"]
    assert index_main([*argv, "--output", str(out), "--kind", "hnsw", "--no-progress"]) == 0
    index = GalleryIndex.load(out)
    assert len(index) == 4 and {m["pid"] for m in index.metadata} == {-1}
    assert index.manifest.kind == "hnsw" and index.manifest.threshold is None
    capsys.readouterr()
    assert search_main([str(out), str(folder / "2.jpg"), "--modality", "ir", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)[0]["results"]
    assert len(results) == 4 and results[0]["path"] == str(folder / "2.jpg")  # itself first
    assert results[0]["distance"] == pytest.approx(0.0, abs=1e-5)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]


def test_index_refuses_bad_arguments(tiny_run, tmp_path, capsys):
    run = str(tiny_run["dir"])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    base = [run, "--split", "test", "--modality", "vis", "--no-progress"]
    assert index_main([*base, "--output", str(busy)]) == 2
    _one_error_line(capsys, "holds other files")
    assert index_main([*base, "--output", str(tmp_path / "o"), "--param", "nlist"]) == 2
    _one_error_line(capsys, "NAME=INTEGER")
    assert index_main([*base, "--output", str(tmp_path / "o"), "--param", "M=4"]) == 2
    _one_error_line(capsys, "flat index takes")
    # faiss would abort (M=0), allocate without bound (M=-1) or fail at search (nprobe=0).
    for kind, param, needle in (
        ("ivf", "nlist=100000", "nlist=100000 is out of range: it must be between 1 and 48"),
        ("ivf", "nprobe=0", "nprobe=0 is out of range"),
        ("hnsw", "M=0", "M=0 is out of range"),
        ("hnsw", "M=-1", "M=-1 is out of range"),
    ):
        argv = [*base, "--output", str(tmp_path / "o"), "--kind", kind, "--param", param]
        assert index_main(argv) == 2
        _one_error_line(capsys, needle)
        assert not (tmp_path / "o").exists()
    assert (
        index_main(
            [
                run,
                "--images",
                str(tmp_path / "none"),
                "--modality",
                "ir",
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    _one_error_line(capsys, "not a folder")
    with pytest.raises(SystemExit):
        index_main([*base, "--images", str(tmp_path), "--output", str(tmp_path / "o")])


def test_index_refuses_to_overwrite_without_flag(vis_index, tiny_run, capsys):
    argv = [
        str(tiny_run["dir"]),
        "--split",
        "test",
        "--modality",
        "vis",
        "--output",
        str(vis_index),
        "--no-progress",
    ]
    assert index_main(argv) == 2
    _one_error_line(capsys, "already holds an index", "--overwrite")


def test_search_refuses_bad_queries(vis_index, tiny_run, tmp_path, capsys):
    query = _split(tiny_run["cfg"], "test")["ir"][0].path
    assert search_main([str(tmp_path), query, "--modality", "ir"]) == 2
    _one_error_line(capsys, "not a gallery index")
    text = tmp_path / "q.jpg"
    text.write_text("not an image")
    assert search_main([str(vis_index), str(text), "--modality", "ir"]) == 2
    _one_error_line(capsys, "cannot read image")
    assert search_main([str(vis_index), query, "--modality", "ir", "--k", "0"]) == 2
    _one_error_line(capsys, "k must be")
    # Another model's weights: a copy of the run with one tensor changed.
    other = tmp_path / "other-run"
    shutil.copytree(tiny_run["dir"], other)
    ckpt_path = other / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["model"]["neck.bn.weight"] = ckpt["model"]["neck.bn.weight"] + 0.5
    torch.save(ckpt, ckpt_path)
    assert search_main([str(vis_index), query, "--modality", "ir", "--run", str(other)]) == 2
    _one_error_line(capsys, "not the one that built this index")


def test_index_add_makes_images_searchable_and_durable(vis_index, tiny_run, tmp_path, capsys):
    live = tmp_path / "live"
    shutil.copytree(vis_index, live)
    new = _split(tiny_run["cfg"], "val")["vis"][:2]
    argv = [str(live), new[0].path, new[1].path, "--camid", "5", "--pid", "12", "--time", "t0"]
    assert index_main(["add", *argv]) == 0
    assert "added 2 images (ids 48, 49)" in capsys.readouterr().out
    # Not saved, only logged: a fresh load replays the log.
    index = GalleryIndex.load(live)
    assert len(index) == 50 and (live / "additions.wal").stat().st_size > 0
    item = index.item(49)
    assert item["camid"] == 5 and item["pid"] == 12 and item["time"] == "t0"
    assert Path(item["path"]).parent == live / "uploads"
    assert Path(item["path"]).read_bytes() == Path(new[1].path).read_bytes()
    capsys.readouterr()
    assert search_main([str(live), new[1].path, "--modality", "vis", "--json", "--k", "1"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["results"][0]
    assert top["id"] == 49 and top["distance"] == pytest.approx(0.0, abs=1e-5)
    assert index_main(["add", str(live), new[0].path, "--camid", "1", "--modality", "ir"]) == 2
    _one_error_line(capsys, "this gallery holds vis images")
    assert index_main(["add", str(live), str(tmp_path / "nope.jpg"), "--camid", "1"]) == 2
    _one_error_line(capsys, "does not exist")


def test_index_on_milvus_lite_ranks_as_faiss(vis_index, tiny_run, tmp_path, capsys):
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    from csetgraph.retrieval import open_gallery

    out = tmp_path / "mv"
    db = tmp_path / "gallery.db"
    argv = [str(tiny_run["dir"]), "--split", "test", "--modality", "vis", "--no-progress"]
    assert index_main([*argv, "--output", str(out), "--store", str(db)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    query = next(r for r in _split(tiny_run["cfg"], "test")["ir"] if r.camid == 3)
    answers = []
    for folder in (vis_index, out):
        capsys.readouterr()
        args = [str(folder), query.path, "--modality", "ir", "--k", "8", "--camid", "3"]
        assert search_main([*args, "--json"]) == 0
        answers.append(json.loads(capsys.readouterr().out)[0]["results"])
    assert [r["path"] for r in answers[0]] == [r["path"] for r in answers[1]]
    np.testing.assert_allclose(
        [r["distance"] for r in answers[0]], [r["distance"] for r in answers[1]], atol=1e-5
    )
    assert index_main([*argv, "--output", str(tmp_path / "mv2"), "--store", str(db) + "#mv"]) == 2
    _one_error_line(capsys, "collection 'mv'", "already exists", "--overwrite")
    gallery = open_gallery(out)
    gallery.drop()
    gallery.close()
    assert index_main([*argv, "--output", str(tmp_path / "x"), "--store", "mysql://h"]) == 2
    _one_error_line(capsys, "expected milvus://HOST:PORT")


def test_index_refuses_a_read_only_output(tiny_run, tmp_path, capsys, monkeypatch):
    """A folder without write permission is refused before anything is embedded. Root may
    write anywhere, so as root os.access is made to answer as it does for other users."""
    import csetgraph.commands.index as index_command

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(
            index_command.os,
            "access",
            lambda p, mode: real(p, mode) and not Path(p).resolve() == locked.resolve(),
        )
    try:
        argv = [str(tiny_run["dir"]), "--split", "test", "--modality", "vis", "--no-progress"]
        assert index_main([*argv, "--output", str(locked / "g")]) == 2
        _one_error_line(capsys, "permission denied", str(locked))
        assert not (locked / "g").exists()
    finally:
        locked.chmod(0o700)
