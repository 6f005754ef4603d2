"""default_params grows with the gallery, and its defaults keep recall on a larger gallery."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from csetgraph.retrieval import GalleryIndex, default_params
from csetgraph.retrieval.index import IVF_TRAIN_PER_CELL, _ivf_training_sample

SIZES = [1, 50, 1_000, 4_000, 10_000, 10_001, 50_000, 100_000, 200_000, 1_000_000, 10**7]


def _non_decreasing(values):
    return all(a <= b for a, b in itertools.pairwise(values))


def test_default_params_grow_with_the_gallery():
    assert SIZES == sorted(SIZES) and len(SIZES) > 5
    ivf = [default_params("ivf", n) for n in SIZES]
    hnsw = [default_params("hnsw", n) for n in SIZES]
    for key in ("nlist", "nprobe"):
        assert _non_decreasing([p[key] for p in ivf]), key
    for key in ("M", "ef_construction", "ef_search"):
        assert _non_decreasing([p[key] for p in hnsw]), key
    for n, p in zip(SIZES, ivf, strict=True):
        assert 1 <= p["nprobe"] <= p["nlist"]
        # every cell gets the 39 training rows faiss asks for (one cell for tiny galleries)
        assert p["nlist"] == 1 or 39 * p["nlist"] <= n
    # They do grow: a 1M gallery is searched wider than a 10k one.
    big, small = SIZES.index(1_000_000), SIZES.index(10_000)
    assert ivf[big]["nprobe"] > ivf[small]["nprobe"]
    assert hnsw[big]["ef_search"] > hnsw[small]["ef_search"]
    assert all(p["ef_search"] >= 10 for p in hnsw)  # the beam holds at least the k=10 asked


def test_ivf_training_sample_is_a_seeded_subset_of_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5_000, 4)).astype(np.float32)
    x[:, 0] = np.arange(len(x))  # each row names itself
    nlist = 20
    sample = _ivf_training_sample(x, nlist)
    assert sample.shape == (IVF_TRAIN_PER_CELL * nlist, 4)
    rows = sample[:, 0].astype(int)
    assert len(set(rows)) == len(rows)  # no row twice
    np.testing.assert_array_equal(sample, x[rows])  # whole rows of x, unchanged
    np.testing.assert_array_equal(_ivf_training_sample(x, nlist), sample)  # seeded
    assert _ivf_training_sample(x, 100) is x  # 64 * 100 >= 5,000 rows: all of them


def test_ivf_trained_on_a_sample_keeps_recall(gallery, recall_at_10):
    """nlist=40 on 4,000 rows trains on 2,560 of them; recall against flat stays high."""
    feats, meta, queries = gallery
    assert IVF_TRAIN_PER_CELL * 40 < len(feats)
    _, exact = GalleryIndex.build(feats, meta, kind="flat").search(queries, k=10)
    _, approx = GalleryIndex.build(feats, meta, kind="ivf", nlist=40, nprobe=10).search(
        queries, k=10
    )
    assert recall_at_10(approx, exact) > 0.9


@pytest.fixture(scope="module")
def reid_like(bench_search):
    """20,000 x 64 re-id-like gallery (the benchmark's recipe), 300 queries, exact top 10."""
    bench = bench_search
    feats, ids, world = bench.reid_gallery(20_000, 64, seed=0)
    queries, _ = bench.reid_queries(world, ids, 300, seed=1)
    dist = 1.0 - queries.astype(np.float64) @ feats.astype(np.float64).T
    exact = np.argsort(dist, axis=1, kind="stable")[:, :10]
    meta = [{"path": "", "pid": -1, "camid": 1, "modality": "vis"}] * len(feats)
    return feats, meta, queries, exact


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_defaults_keep_recall_on_a_larger_reid_like_gallery(reid_like, recall_at_10, kind):
    """Recall@10 >= 0.95 against numpy brute force with default parameters at 20,000 items
    (nlist 512, nprobe 32; ef_search 80), 5x the shared fixture's gallery and past the 10,000
    where the defaults start to grow."""
    feats, meta, queries, exact = reid_like
    assert default_params(kind, len(feats)) != default_params(kind, 10_000)  # grown
    index = GalleryIndex.build(feats, meta, kind=kind)
    assert index.manifest.params == default_params(kind, len(feats))
    _, approx = index.search(queries, k=10)
    assert recall_at_10(approx, exact) >= 0.95
