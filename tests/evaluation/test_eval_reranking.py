"""k_reciprocal_rerank against a loop transcription of the authors' released ``re_ranking``
(the ``reference_rerank`` fixture of ``conftest.py``)."""

import numpy as np
import pytest
import torch

from csetgraph.evaluation import k_reciprocal_rerank, pairwise_distance, rank_metrics


def _features(seed, nq, ng, dim=8, clusters=4):
    rng = np.random.default_rng(seed)
    # Clustered features, so that reciprocal neighbourhoods and expansions are non-trivial.
    centres = rng.normal(size=(clusters, dim)) * 2
    q = centres[rng.integers(0, clusters, nq)] + rng.normal(size=(nq, dim))
    g = centres[rng.integers(0, clusters, ng)] + rng.normal(size=(ng, dim))
    return q, g


def _case(seed, nq=12, ng=30, metric="euclidean"):
    q, g = _features(seed, nq, ng)
    return (
        pairwise_distance(q, g, metric),
        pairwise_distance(q, q, metric),
        pairwise_distance(g, g, metric),
    )


CASES = [
    (k1, k2, lam, metric, seed)
    for (k1, k2, lam) in [(20, 6, 0.3), (4, 3, 0.3), (3, 1, 0.0), (5, 2, 0.5), (7, 4, 0.9)]
    for metric in ("euclidean", "cosine")
    for seed in (0, 1, 2)
]


def test_case_list_is_not_empty():
    assert len(CASES) == 30


@pytest.mark.parametrize(("k1", "k2", "lam", "metric", "seed"), CASES)
def test_matches_reference_function(k1, k2, lam, metric, seed, reference_rerank):
    qg, qq, gg = _case(seed, metric=metric)
    out = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    ref = reference_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(
        np.argsort(out, axis=1, kind="stable"), np.argsort(ref, axis=1, kind="stable")
    )


def test_matches_reference_on_a_larger_pool_with_identical_metrics(reference_rerank):
    q, g = _features(7, 60, 150, dim=16, clusters=10)
    qg = pairwise_distance(q, g, "cosine")
    qq, gg = pairwise_distance(q, q, "cosine"), pairwise_distance(g, g, "cosine")
    out = k_reciprocal_rerank(qg, qq, gg)
    ref = reference_rerank(qg, qq, gg)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    q_pids = np.arange(60) % 10
    g_pids = np.arange(150) % 10
    ours = rank_metrics(out, q_pids, g_pids, None, None, "regdb")
    theirs = rank_metrics(ref.astype(np.float64), q_pids, g_pids, None, None, "regdb")
    np.testing.assert_array_equal(ours.cmc, theirs.cmc)
    assert ours.mAP == pytest.approx(theirs.mAP, abs=1e-12)


def test_hand_worked_two_items():
    # One query, one gallery item at distance 2: T = [[0, 1], [1, 0]] (4 / 4). With k1=1 both
    # are each other's reciprocal neighbours, V rows are (1, e^-1) / (1 + e^-1) and its
    # reverse, so sum of minima m = 2 e^-1 / (1 + e^-1) and J = 1 - m / (2 - m).
    qg, qq, gg = np.array([[2.0]]), np.zeros((1, 1)), np.zeros((1, 1))
    e = np.exp(-1.0)
    m = 2 * e / (1 + e)
    jaccard = 1 - m / (2 - m)
    out = k_reciprocal_rerank(qg, qq, gg, k1=1, k2=1, lambda_value=0.25)
    assert out[0, 0] == pytest.approx(0.75 * jaccard + 0.25 * 1.0, abs=1e-7)


def test_lambda_one_returns_normalised_squared_distance():
    qg, qq, gg = _case(3)
    out = k_reciprocal_rerank(qg, qq, gg, lambda_value=1.0)
    pool = np.block([[qq, qg], [qg.T, gg]]) ** 2
    expected = qg**2 / pool[:, : len(qq)].max(axis=0)[:, None]  # column q's maximum
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        np.argsort(out, axis=1, kind="stable"), np.argsort(qg, axis=1, kind="stable")
    )


def test_torch_in_torch_out():
    qg, qq, gg = _case(4)
    ref = k_reciprocal_rerank(qg, qq, gg, k1=4, k2=3)
    out = k_reciprocal_rerank(
        torch.from_numpy(qg), torch.from_numpy(qq), torch.from_numpy(gg), k1=4, k2=3
    )
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_identical_features_give_finite_distances():
    # Every distance 0: the reference divides by a zero maximum (NaN); ours stays finite and
    # ties every gallery item.
    z = np.zeros((3, 5)), np.zeros((3, 3)), np.zeros((5, 5))
    out = k_reciprocal_rerank(*z, k1=2, k2=1)
    assert np.isfinite(out).all()


def test_rerank_bad_input():
    qg, qq, gg = _case(5)
    with pytest.raises(ValueError, match="g_g_dist"):
        k_reciprocal_rerank(qg, qq, gg[:-1, :-1])
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(qg, qq, gg, lambda_value=1.5)
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_rerank(qg, qq, gg, k1=0)
    bad = qg.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        k_reciprocal_rerank(bad, qq, gg)
