"""GalleryIndex against a brute-force numpy ranking, and the approximate kinds' recall."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from csetgraph.errors import ConfigError, IndexFolderError, IndexMismatchError
from csetgraph.retrieval import KINDS, GalleryIndex


def brute_force(gallery, camids, queries, query_camids, exclude, k):
    """Reference: sort 1 - cos over the gallery, dropping excluded cameras, pad with -1/inf."""
    dist = 1.0 - queries.astype(np.float64) @ gallery.astype(np.float64).T
    out_d = np.full((len(queries), k), np.inf)
    out_i = np.full((len(queries), k), -1)
    for q in range(len(queries)):
        banned = exclude.get(query_camids[q], set()) if query_camids is not None else set()
        order = np.argsort(dist[q], kind="stable")
        keep = [j for j in order if not banned or camids[j] not in banned][:k]
        out_i[q, : len(keep)] = keep
        out_d[q, : len(keep)] = dist[q, keep]
    return out_d, out_i


def test_flat_equals_brute_force(gallery):
    feats, meta, queries = gallery
    index = GalleryIndex.build(feats, meta, kind="flat")
    d, i = index.search(queries, k=10)
    ref_d, ref_i = brute_force(feats, None, queries, None, {}, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, atol=1e-5)
    assert (np.diff(d, axis=1) >= 0).all()  # nearest first


def test_flat_camera_exclusion_equals_brute_force(gallery):
    feats, meta, queries = gallery
    camids = [m["camid"] for m in meta]
    query_camids = [3 if q % 2 else 1 for q in range(len(queries))]
    exclude = {3: {2}, 1: {4, 5}}
    index = GalleryIndex.build(feats, meta, kind="flat")
    d, i = index.search(queries, k=20, query_camids=query_camids, exclude_cameras=exclude)
    ref_d, ref_i = brute_force(feats, camids, queries, query_camids, exclude, 20)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, atol=1e-5)
    for q, row in enumerate(i):
        assert not {camids[j] for j in row} & exclude[query_camids[q]]


def test_fewer_items_than_k_pads_with_minus_one(clustered):
    feats = clustered(6, 8, 2, seed=4)
    meta = [{"path": str(j), "pid": -1, "camid": 1 + j % 3, "modality": "ir"} for j in range(6)]
    index = GalleryIndex.build(feats, meta)
    d, i = index.search(feats[:2], k=5, query_camids=[3, 3], exclude_cameras={3: {1, 2}})
    camids = [m["camid"] for m in meta]
    ref_d, ref_i = brute_force(feats, camids, feats[:2], [3, 3], {3: {1, 2}}, 5)
    np.testing.assert_array_equal(i, ref_i)
    assert (i[:, 2:] == -1).all() and np.isinf(d[:, 2:]).all()
    np.testing.assert_allclose(d[:, :2], ref_d[:, :2], atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_keep_recall_with_defaults(gallery, recall_at_10, kind):
    feats, meta, queries = gallery
    _, exact = GalleryIndex.build(feats, meta, kind="flat").search(queries, k=10)
    index = GalleryIndex.build(feats, meta, kind=kind)
    _, approx = index.search(queries, k=10)
    assert recall_at_10(approx, exact) >= 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(gallery, tmp_path, kind):
    assert KINDS
    feats, meta, queries = gallery
    stamp = {"run": "runs/a", "weights": "abc123"}
    prep = {"height": 64, "width": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    index = GalleryIndex.build(feats, meta, kind=kind, model=stamp, preprocess=prep, threshold=0.4)
    before = index.search(queries, k=10, query_camids=[3] * 100, exclude_cameras={3: {2}})
    loaded = GalleryIndex.load(index.save(tmp_path / "idx"))
    after = loaded.search(queries, k=10, query_camids=[3] * 100, exclude_cameras={3: {2}})
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    assert loaded.metadata == meta and len(loaded) == len(feats)
    assert loaded.manifest == index.manifest
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["model"] == stamp and manifest["preprocess"] == prep
    assert manifest["dim"] == 64 and manifest["threshold"] == 0.4 and manifest["kind"] == kind


@pytest.mark.parametrize("kind", KINDS)
def test_add_extends_the_index(gallery, kind):
    feats, meta, _ = gallery
    index = GalleryIndex.build(feats[:3000], meta[:3000], kind=kind)
    index.add(feats[3000:], meta[3000:])
    assert len(index) == len(feats) and index.metadata == meta
    _, i = index.search(feats[3500:3510], k=1)
    np.testing.assert_array_equal(i[:, 0], np.arange(3500, 3510))  # each finds itself


def test_refuses_another_width_or_model(gallery, clustered, metadata):
    feats, meta, queries = gallery
    index = GalleryIndex.build(feats, meta, model={"run": "runs/a", "weights": "aaaa"})
    other = clustered(3, 32, 2, seed=5)
    with pytest.raises(IndexMismatchError, match="32-dimensional"):
        index.search(other, k=3)
    with pytest.raises(IndexMismatchError, match="not the one that built"):
        index.search(queries, k=3, model={"run": "runs/b", "weights": "bbbb"})
    index.search(queries, k=3, model={"run": "elsewhere/a", "weights": "aaaa"})  # same weights
    with pytest.raises(IndexMismatchError, match="32-dimensional"):
        index.add(other, metadata(3, seed=0))


def test_bad_inputs(gallery, tmp_path):
    feats, meta, _ = gallery
    with pytest.raises(IndexMismatchError, match="L2-normalised"):
        GalleryIndex.build(feats * 2, meta)
    with pytest.raises(IndexMismatchError, match="metadata entries"):
        GalleryIndex.build(feats, meta[:-1])
    with pytest.raises(IndexMismatchError, match="lacks"):
        GalleryIndex.build(feats[:1], [{"path": "x"}])
    with pytest.raises(ConfigError, match="not one of"):
        GalleryIndex.build(feats, meta, kind="lsh")
    with pytest.raises(ConfigError, match="nlist"):
        GalleryIndex.build(feats, meta, kind="ivf", M=4)
    index = GalleryIndex.build(feats, meta)
    with pytest.raises(ConfigError, match="query_camids"):
        index.search(feats[:2], k=3, exclude_cameras={3: {2}})
    with pytest.raises(IndexFolderError, match="not a gallery index"):
        GalleryIndex.load(tmp_path)
    index.save(tmp_path / "x")
    (tmp_path / "x" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFolderError, match="corrupt"):
        GalleryIndex.load(tmp_path / "x")


def test_an_index_of_another_format_version_is_refused_by_name(gallery, tmp_path):
    feats, meta, _ = gallery
    folder = GalleryIndex.build(feats, meta).save(tmp_path / "x")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == 2  # what save writes today (1 still loads)
    for version in (0, 3):
        manifest["version"] = version
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(
            IndexFolderError,
            match=f"format version {version}; this csetgraph reads versions 1 to 2",
        ):
            GalleryIndex.load(folder)


def test_manifest_camera_rule_applies_when_a_query_camera_is_given(gallery):
    feats, meta, queries = gallery
    camids = [m["camid"] for m in meta]
    index = GalleryIndex.build(feats, meta)
    index.manifest.exclude_cameras = {"3": [2]}
    _, i = index.search(queries, k=10, query_camids=[3] * len(queries))
    _, ref_i = brute_force(feats, camids, queries, [3] * len(queries), {3: {2}}, 10)
    np.testing.assert_array_equal(i, ref_i)
    _, unruled = index.search(queries, k=10)  # no query camera: nothing excluded
    np.testing.assert_array_equal(unruled, brute_force(feats, None, queries, None, {}, 10)[1])


def test_missing_faiss_names_the_deploy_extra(gallery, monkeypatch):
    from csetgraph.errors import MissingDependencyError

    feats, meta, _ = gallery
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"csetgraph\[deploy\]"):
        GalleryIndex.build(feats[:10], meta[:10])
