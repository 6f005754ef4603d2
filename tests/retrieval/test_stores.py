"""One search suite, run on faiss and on Milvus Lite (the embedded Milvus): same rankings.

Milvus Lite keeps its collection in a ``.db`` file under the test's temporary folder; each
test drops its collection and closes the client (the embedded server stops with it).
"""

from __future__ import annotations

import numpy as np
import pytest

from csetgraph.errors import IndexMismatchError
from csetgraph.retrieval import build_gallery_index, open_gallery

STORES = ("faiss", "milvus-lite")
MODEL = {"run": "runs/a", "weights": "aaaa"}


def reference(feats, ids, camids, queries, query_camids, exclude, k):
    """Brute force: ids sorted by 1 - cos, excluded cameras dropped (one query at a time)."""
    dist = 1.0 - queries.astype(np.float64) @ feats.astype(np.float64).T
    out = []
    for q in range(len(queries)):
        banned = exclude.get(query_camids[q], set()) if query_camids is not None else set()
        order = [j for j in np.argsort(dist[q], kind="stable") if camids[j] not in banned]
        out.append([ids[j] for j in order[:k]])
    return np.asarray(out), dist


@pytest.fixture
def make(tmp_path):
    """``make(store, feats, meta, **kw)``: a built and saved index, reopened from its folder."""
    opened = []

    def build(store, feats, meta, kind="flat", **kw):
        folder = tmp_path / f"{store}-{len(opened)}"
        spec = None
        if store == "milvus-lite":
            pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
            spec = {"engine": "milvus", "uri": str(tmp_path / "g.db"), "collection": folder.name}
            spec["collection"] = spec["collection"].replace("-", "_")
        built = build_gallery_index(feats, meta, kind, store=spec, model=MODEL, **kw)
        built.save(folder)
        if spec:
            built.close()
        index = open_gallery(folder, writable=True)
        opened.append(index)
        return index, folder

    build.opened = opened
    yield build
    for index in opened:
        if hasattr(index, "drop"):
            index.drop()
        index.close()


@pytest.fixture(scope="module")
def small(clustered, metadata):
    """300 items of width 32, distinct distances; 20 queries near gallery items."""
    feats = clustered(300, 32, 30, seed=7)
    rng = np.random.default_rng(8)
    q = feats[rng.choice(300, 20, replace=False)] + 0.2 * rng.standard_normal((20, 32))
    return feats, metadata(300, seed=9), (q / np.linalg.norm(q, axis=1, keepdims=True))


@pytest.mark.parametrize("store", STORES)
def test_rankings_equal_brute_force(make, small, store):
    assert STORES
    feats, meta, queries = small
    index, _ = make(store, feats, meta)
    camids = [m["camid"] for m in meta]
    qcams = [3 if i % 2 else 1 for i in range(len(queries))]
    exclude = {3: {2}, 1: {4, 5}}
    d, found = index.search(queries, k=10, query_camids=qcams, exclude_cameras=exclude)
    ref, dist = reference(feats, range(300), camids, queries, qcams, exclude, 10)
    np.testing.assert_array_equal(found, ref)
    np.testing.assert_allclose(d, np.take_along_axis(dist, ref, 1), atol=1e-5)
    _, plain = index.search(queries, k=10)
    np.testing.assert_array_equal(
        plain, reference(feats, range(300), camids, queries, None, {}, 10)[0]
    )


@pytest.mark.parametrize("store", STORES)
def test_manifest_rule_threshold_and_model_mean_the_same(make, small, store):
    feats, meta, queries = small
    index, folder = make(store, feats, meta, threshold=0.25)
    index.manifest.exclude_cameras = {"3": [2]}
    camids = [m["camid"] for m in meta]
    _, found = index.search(queries, k=5, query_camids=[3] * len(queries))
    ref, _ = reference(feats, range(300), camids, queries, [3] * len(queries), {3: {2}}, 5)
    np.testing.assert_array_equal(found, ref)
    assert open_gallery(folder).manifest.threshold == 0.25
    with pytest.raises(IndexMismatchError, match="not the one that built"):
        index.search(queries, k=3, model={"run": "b", "weights": "bbbb"})
    with pytest.raises(IndexMismatchError, match="16-dimensional"):
        index.search(np.eye(16, dtype=np.float32)[:2], k=3)


@pytest.mark.parametrize("store", STORES)
def test_added_items_are_found_and_removed_ones_gone(make, small, clustered, metadata, store):
    feats, meta, queries = small
    index, folder = make(store, feats[:250], meta[:250])
    new = index.add(feats[250:], meta[250:], when="2026-12-04T12:00:00Z")
    assert len(new) == 50 and len(set(new)) == 50 and min(new) >= 250 and len(index) == 300
    _, found = index.search(feats[250:], k=1)
    np.testing.assert_array_equal(found[:, 0], new)  # each added item finds itself
    assert index.items_of(new[:2]) == {new[0]: meta[250], new[1]: meta[251]}
    index.remove(new[0])
    index.remove(3)
    assert len(index) == 298
    ids = [i for i in range(250) if i != 3] + new[1:]
    keep = [j for j in range(300) if j not in (3, 250)]
    camids = [meta[j]["camid"] for j in keep]
    _, found = index.search(queries, k=10)
    ref, _ = reference(feats[keep], ids, camids, queries, None, {}, 10)
    np.testing.assert_array_equal(found, ref)
    # The same gallery after reopening from the folder (the teardown closes and drops it).
    index.close()
    again = make.opened[-1] = open_gallery(folder)
    np.testing.assert_array_equal(again.search(queries, k=10)[1], ref)
    assert again.manifest.last_added == "2026-12-04T12:00:00Z"


def test_faiss_and_milvus_give_the_same_rankings(make, small):
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    feats, meta, queries = small
    faiss_index, _ = make("faiss", feats, meta)
    milvus_index, _ = make("milvus-lite", feats, meta)
    qcams = [3] * len(queries)
    a = faiss_index.search(queries, k=10, query_camids=qcams, exclude_cameras={3: {2}})
    b = milvus_index.search(queries, k=10, query_camids=qcams, exclude_cameras={3: {2}})
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
