"""Tests for csetgraph.evaluation.metrics.rank_metrics.

References used: hand-worked tiny cases (expected numbers written out in comments), an
independent per-query loop in the style of the community reference code, and
scikit-learn's average_precision_score.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from csetgraph.evaluation import RankMetrics, rank_metrics

# ---------------------------------------------------------------------------------------
# Independent reference: one query at a time, like Ye et al.'s eval_sysu / eval_regdb and
# DEEN's eval_llcm, with a stable argsort and padding of short lists with the last value.
# ---------------------------------------------------------------------------------------


def loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, protocol, max_rank):
    distmat = np.asarray(distmat, dtype=np.float64)
    indices = np.argsort(distmat, axis=1, kind="stable")
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        pids, cams = g_pids[order], g_camids[order]
        if protocol == "sysu":
            remove = (q_camids[i] == 3) & (cams == 2)
        elif protocol == "llcm":
            remove = (pids == q_pids[i]) & (cams == q_camids[i])
        else:
            remove = np.zeros(len(order), dtype=bool)
        kept = pids[~remove]
        matches = (kept == q_pids[i]).astype(np.int64)
        if not matches.any():
            continue
        if protocol in ("sysu", "llcm"):
            first = np.unique(kept, return_index=True)[1]
            dedup = np.array([kept[j] for j in sorted(first)])
            curve = (dedup == q_pids[i]).astype(np.int64).cumsum()
        else:
            curve = matches.cumsum()
            curve[curve > 1] = 1
        if len(curve) < max_rank:
            curve = np.concatenate([curve, np.full(max_rank - len(curve), curve[-1])])
        all_cmc.append(curve[:max_rank])
        hit_ranks = np.flatnonzero(matches) + 1.0
        all_ap.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        all_inp.append(len(hit_ranks) / hit_ranks[-1])
    cmc = np.sum(all_cmc, axis=0) / len(all_cmc)
    return cmc, np.mean(all_ap), np.mean(all_inp), len(all_cmc)


def random_case(rng, protocol, num_q, num_g, num_ids=8, ties=True):
    if ties:
        distmat = rng.integers(0, 4, size=(num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g))
    # Query identities include some that are absent from the gallery (invalid queries).
    q_pids = rng.integers(0, num_ids + 2, size=num_q)
    g_pids = rng.integers(0, num_ids, size=num_g)
    if protocol == "sysu":
        q_cams = rng.choice([3, 6], size=num_q)
        g_cams = rng.choice([1, 2, 4, 5], size=num_g)
    else:
        q_cams = rng.integers(1, 4, size=num_q)
        g_cams = rng.integers(1, 4, size=num_g)
    return distmat, q_pids, g_pids, q_cams, g_cams


def assert_same(res: RankMetrics, ref):
    cmc, m_ap, m_inp, num_valid = ref
    np.testing.assert_allclose(res.cmc, cmc, rtol=0, atol=1e-12)
    assert res.mAP == pytest.approx(m_ap, abs=1e-12)
    assert res.mINP == pytest.approx(m_inp, abs=1e-12)
    assert res.num_valid_queries == num_valid


# ---------------------------------------------------------------------------------------
# Hand-worked cases
# ---------------------------------------------------------------------------------------


def test_sysu_hand_worked():
    g_pids = np.array([2, 1, 2, 1, 3])
    g_cams = np.array([1, 1, 2, 1, 4])
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.05],  # A: pid 1, cam 3
            [0.3, 0.1, 0.2, 0.4, 0.5],  # B: pid 1, cam 6
            [0.1, 0.2, 0.3, 0.4, 0.5],  # C: pid 7 (not in gallery), cam 3
        ]
    )
    q_pids = np.array([1, 1, 7])
    q_cams = np.array([3, 6, 3])
    # A ranked: g4(id3) g0(id2) g1(id1) g2(id2, cam2: removed for a cam-3 query) g3(id1)
    #   filtered ids [3, 2, 1, 1]: matches at ranks 3, 4 -> AP = (1/3 + 2/4) / 2 = 5/12,
    #   INP = 2/4; dedup [3, 2, 1] -> first match at rank 3.
    # B ranked: g1(id1) g2(id2) g0(id2) g3(id1) g4(id3), nothing removed (cam 6):
    #   matches at 1, 4 -> AP = (1 + 2/4) / 2 = 3/4, INP = 2/4; dedup [1, 2, 3] -> rank 1.
    # C: no true match -> invalid.
    res = rank_metrics(distmat, q_pids, g_pids, q_cams, g_cams, "sysu", max_rank=5)
    np.testing.assert_allclose(res.cmc, [0.5, 0.5, 1.0, 1.0, 1.0])
    assert res.mAP == pytest.approx((5 / 12 + 3 / 4) / 2)
    assert res.mINP == pytest.approx(0.5)
    assert (res.num_valid_queries, res.num_invalid_queries) == (2, 1)
    assert res.as_dict() == pytest.approx({"rank1": 0.5, "rank5": 1.0, "mAP": 7 / 12, "mINP": 0.5})


def test_sysu_cam3_query_ignores_cam2_even_for_true_matches():
    # The only true match is in camera 2: a cam-3 query has no valid match, a cam-6 has.
    g_pids, g_cams = np.array([1, 2]), np.array([2, 1])
    distmat = np.array([[0.1, 0.2], [0.1, 0.2]])
    res = rank_metrics(distmat, np.array([1, 1]), g_pids, np.array([3, 6]), g_cams, "sysu")
    assert (res.num_valid_queries, res.num_invalid_queries) == (1, 1)
    assert res.cmc[0] == 1.0


def test_llcm_hand_worked_and_short_list_padding():
    g_pids = np.array([1, 1, 2, 1])
    g_cams = np.array([1, 2, 1, 2])
    distmat = np.array([[0.4, 0.1, 0.2, 0.3]])  # query pid 1, cam 2
    # Ranked: g1(id1,c2) g2(id2,c1) g3(id1,c2) g0(id1,c1). LLCM drops same id AND same
    # camera (g1, g3): filtered ids [2, 1] -> match at rank 2: AP = 1/2, INP = 1/2;
    # dedup [2, 1] -> rank 2. The list has 2 entries < max_rank = 4: the curve keeps its
    # last value -> cmc = [0, 1, 1, 1].
    res = rank_metrics(distmat, np.array([1]), g_pids, np.array([2]), g_cams, "llcm", 4)
    np.testing.assert_allclose(res.cmc, [0.0, 1.0, 1.0, 1.0])
    assert res.mAP == pytest.approx(0.5)
    assert res.mINP == pytest.approx(0.5)
    # Under SYSU rules a cam-2 query drops nothing: ids [1, 2, 1, 1], matches 1, 3, 4.
    res = rank_metrics(distmat, np.array([1]), g_pids, np.array([2]), g_cams, "sysu", 4)
    np.testing.assert_allclose(res.cmc, [1.0, 1.0, 1.0, 1.0])
    assert res.mAP == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert res.mINP == pytest.approx(3 / 4)


def test_regdb_plain_cmc_versus_deduplicated():
    g_pids = np.array([5, 5, 6, 6])
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.0],  # ranked ids [6, 5, 5, 6]: matches 1, 4
            [0.0, 0.1, 0.2, 0.3],  # ranked ids [5, 5, 6, 6]: matches 3, 4
        ]
    )
    q_pids = np.array([6, 6])
    # RegDB: plain CMC over images -> first ranks 1 and 3 -> cmc [1/2, 1/2, 1].
    # AP: (1 + 2/4)/2 = 3/4 and (1/3 + 2/4)/2 = 5/12 -> mAP 7/12; INP: 2/4 and 2/4.
    res = rank_metrics(distmat, q_pids, g_pids, None, None, "regdb", max_rank=3)
    np.testing.assert_allclose(res.cmc, [0.5, 0.5, 1.0])
    assert res.mAP == pytest.approx(7 / 12)
    assert res.mINP == pytest.approx(0.5)
    # The identity-deduplicated CMC (sysu, no cam-3 query) puts query 2 at rank 2.
    cams_q, cams_g = np.array([6, 6]), np.array([1, 1, 1, 1])
    res = rank_metrics(distmat, q_pids, g_pids, cams_q, cams_g, "sysu", max_rank=3)
    np.testing.assert_allclose(res.cmc, [0.5, 1.0, 1.0])
    assert res.mAP == pytest.approx(7 / 12)


def test_ties_keep_gallery_order():
    # Equal distances: the stable sort keeps gallery order, so the first gallery item wins.
    distmat = np.array([[1.0, 1.0, 1.0]])
    res = rank_metrics(distmat, [2], [1, 2, 3], None, None, "regdb", max_rank=3)
    np.testing.assert_allclose(res.cmc, [0.0, 1.0, 1.0])  # match at rank 2
    assert res.mAP == pytest.approx(0.5)
    res = rank_metrics(distmat, [2], [2, 1, 3], None, None, "regdb", max_rank=3)
    np.testing.assert_allclose(res.cmc, [1.0, 1.0, 1.0])


def test_gallery_smaller_than_max_rank_and_inf_distances():
    # 2 gallery items, max_rank 20: the curve has 20 entries and keeps its last value.
    # inf is ranked last (allowed): ranked ids [3, 4] -> match at rank 2.
    distmat = np.array([[np.inf, 0.5]])
    res = rank_metrics(distmat, [4], [4, 3], None, None, "regdb")
    assert res.cmc.shape == (20,)
    np.testing.assert_allclose(res.cmc, [0.0] + [1.0] * 19)
    assert res.as_dict()["rank20"] == 1.0
    assert res.mINP == pytest.approx(0.5)


def test_as_dict_only_ranks_up_to_max_rank():
    res = rank_metrics(np.array([[0.0]]), [1], [1], None, None, "regdb", max_rank=7)
    assert set(res.as_dict()) == {"rank1", "rank5", "mAP", "mINP"}
    assert res.cmc.dtype == np.float64 and not res.cmc.flags.writeable


# ---------------------------------------------------------------------------------------
# Against the loop reference and scikit-learn on random cases
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["sysu", "regdb", "llcm"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_rank", [1, 5, 40])
def test_matches_loop_reference_random_with_ties(protocol, seed, max_rank):
    rng = np.random.default_rng(seed)
    num_g = int(rng.integers(3, 30))  # often smaller than max_rank = 40
    case = random_case(rng, protocol, num_q=50, num_g=num_g)
    res = rank_metrics(*case, protocol, max_rank=max_rank)
    ref = loop_reference(*case, protocol, max_rank)
    assert_same(res, ref)
    assert res.num_valid_queries + res.num_invalid_queries == 50
    assert res.num_invalid_queries > 0  # the case generator guarantees absent identities


@pytest.mark.parametrize("protocol", ["sysu", "regdb", "llcm"])
def test_map_matches_sklearn_average_precision(protocol):
    rng = np.random.default_rng(7)
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(rng, protocol, 30, 40, ties=False)
    aps = []
    for i in range(len(q_pids)):
        if protocol == "sysu":
            keep = ~((q_cams[i] == 3) & (g_cams == 2))
        elif protocol == "llcm":
            keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        else:
            keep = np.ones(len(g_pids), dtype=bool)
        y_true = g_pids[keep] == q_pids[i]
        if not y_true.any():
            continue
        ap = average_precision_score(y_true, -distmat[i, keep])
        aps.append(ap)
        # Per query: rank_metrics on the single row gives the same AP.
        one = rank_metrics(
            distmat[i : i + 1], q_pids[i : i + 1], g_pids, q_cams[i : i + 1], g_cams, protocol
        )
        assert one.mAP == pytest.approx(ap, abs=1e-12)
    res = rank_metrics(distmat, q_pids, g_pids, q_cams, g_cams, protocol)
    assert res.num_valid_queries == len(aps)
    assert res.mAP == pytest.approx(np.mean(aps), abs=1e-12)


@pytest.mark.parametrize("protocol", ["sysu", "regdb", "llcm"])
def test_chunk_size_does_not_change_results(protocol):
    case = random_case(np.random.default_rng(3), protocol, 37, 23)
    big = rank_metrics(*case, protocol, chunk_size=1000)
    for chunk in (1, 5):
        small = rank_metrics(*case, protocol, chunk_size=chunk)
        np.testing.assert_array_equal(small.cmc, big.cmc)
        assert (small.mAP, small.mINP, small.num_valid_queries) == (
            big.mAP,
            big.mINP,
            big.num_valid_queries,
        )


def _devices():
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("protocol", ["sysu", "regdb", "llcm"])
def test_torch_input_equals_numpy_input(protocol, device):
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(
        np.random.default_rng(11), protocol, 40, 25
    )
    ref = rank_metrics(distmat, q_pids, g_pids, q_cams, g_cams, protocol)
    t = [torch.as_tensor(x, device=device) for x in (distmat, q_pids, g_pids, q_cams, g_cams)]
    res = rank_metrics(*t, protocol, chunk_size=7)
    np.testing.assert_array_equal(res.cmc, ref.cmc)
    assert res.mAP == pytest.approx(ref.mAP, abs=1e-12)
    assert res.mINP == pytest.approx(ref.mINP, abs=1e-12)
    # Lower precision distances give the same ranking when the values are exact.
    half = rank_metrics(t[0].half(), *t[1:], protocol)
    np.testing.assert_array_equal(half.cmc, ref.cmc)


def test_memmap_input(tmp_path):
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(
        np.random.default_rng(5), "sysu", 30, 20, ties=False
    )
    mm = np.memmap(tmp_path / "d.f32", dtype=np.float32, mode="w+", shape=distmat.shape)
    mm[:] = distmat
    mm.flush()
    mm = np.memmap(tmp_path / "d.f32", dtype=np.float32, mode="r", shape=distmat.shape)
    res = rank_metrics(mm, q_pids, g_pids, q_cams, g_cams, "sysu", chunk_size=4)
    ref = loop_reference(distmat.astype(np.float32), q_pids, g_pids, q_cams, g_cams, "sysu", 20)
    assert_same(res, ref)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def _ok_args():
    return (
        np.zeros((2, 3)),
        np.array([1, 2]),
        np.array([1, 2, 2]),
        np.array([3, 6]),
        np.array([1, 2, 4]),
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: (np.zeros((2, 4)), *a[1:]), "shape"),
        (lambda a: (np.zeros(3), *a[1:]), "2-D"),
        (lambda a: (a[0], np.array([1, 2, 3]), *a[2:]), "labels"),
        (lambda a: (*a[:3], np.array([3]), a[4]), "q_camids"),
        (lambda a: (*a[:4], np.array([1, 2])), "g_camids"),
        (lambda a: (np.zeros((2, 0)), a[1], np.array([]), a[3], np.array([])), "gallery is empty"),
        (
            lambda a: (np.zeros((0, 3)), np.array([]), a[2], np.array([]), a[4]),
            "query set is empty",
        ),
        (lambda a: (np.array([[0.0, np.nan, 1.0], [0, 0, 0]]), *a[1:]), "NaN"),
        (lambda a: (*a[:3], None, None), "needs q_camids"),
        (lambda a: (a[0], np.array([8, 9]), *a[2:]), "no query has a true match"),
    ],
)
def test_bad_input_errors(mutate, message):
    with pytest.raises(ValueError, match=message):
        rank_metrics(*mutate(_ok_args()), "sysu")


def test_bad_protocol_max_rank_chunk_size():
    args = _ok_args()
    with pytest.raises(ValueError, match="protocol must be one of"):
        rank_metrics(*args, "market")
    with pytest.raises(ValueError, match="max_rank"):
        rank_metrics(*args, "sysu", max_rank=0)
    with pytest.raises(ValueError, match="chunk_size"):
        rank_metrics(*args, "sysu", chunk_size=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_stable_ranking_of_special_values(dtype):
    # Negative values, -0.0 vs +0.0 (equal, so a tie kept in gallery order), +-inf; the
    # loop reference uses numpy's stable argsort.
    rng = np.random.default_rng(9)
    values = np.array([-2.5, -1.0, -0.0, 0.0, 0.5, 3.0, np.inf, -np.inf])
    if dtype is np.int64:
        values = np.array([-3, -1, 0, 0, 2, 5, 2**40, -(2**40)])
    distmat = rng.choice(values, size=(60, 12)).astype(dtype)
    if dtype is np.float64:
        distmat[::3] += 1e-12  # not representable in float32: the float64 path
    q_pids = rng.integers(0, 5, 60)
    g_pids = rng.integers(0, 5, 12)
    q_cams, g_cams = rng.integers(1, 3, 60), rng.integers(1, 3, 12)
    for protocol in ("regdb", "llcm"):
        res = rank_metrics(distmat, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=12)
        ref = loop_reference(distmat, q_pids, g_pids, q_cams, g_cams, protocol, 12)
        assert_same(res, ref)


def test_ignored_gallery_hand_worked():
    from csetgraph.evaluation import ignored_gallery

    g_pids = np.array([1, 1, 2, 2, 1])
    g_cams = np.array([2, 1, 2, 4, 3])
    q_pids, q_cams = np.array([1, 2, 1]), np.array([3, 2, 1])
    # SYSU-MM01: only the camera-3 query loses the camera-2 images (columns 0 and 2).
    np.testing.assert_array_equal(
        ignored_gallery("sysu", q_pids, q_cams, g_pids, g_cams),
        [[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    )
    # LLCM: same identity and camera.
    np.testing.assert_array_equal(
        ignored_gallery("llcm", q_pids, q_cams, g_pids, g_cams),
        [[0, 0, 0, 0, 1], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]],
    )
    assert not ignored_gallery("regdb", q_pids, None, g_pids, None).any()
    # One query as scalars: one row, (G,).
    np.testing.assert_array_equal(ignored_gallery("llcm", 2, 4, g_pids, g_cams), [0, 0, 0, 1, 0])
    with pytest.raises(ValueError, match="protocol"):
        ignored_gallery("market", q_pids, q_cams, g_pids, g_cams)
