"""Tests for csetgraph.evaluation.reranking.k_reciprocal_rerank against a set-based loop
written directly from the definitions in Zhong et al. (CVPR 2017)."""

import numpy as np
import pytest
import torch

from csetgraph.evaluation import k_reciprocal_rerank, pairwise_distance


def rerank_loop(qg, qq, gg, k1, k2, lam):
    """Straightforward reference: Python sets and explicit loops, one item at a time."""
    dist = np.block([[qq, qg], [qg.T, gg]])
    n, nq = len(dist), len(qq)
    rank = [list(np.argsort(dist[i], kind="stable")) for i in range(n)]

    def neighbours(i, k):  # N(i, k): the k + 1 nearest items, i itself included
        return set(rank[i][: k + 1])

    def reciprocal(i, k):  # R(i, k)
        return {j for j in neighbours(i, k) if i in neighbours(j, k)}

    half = round(k1 / 2)
    v = np.zeros((n, n))
    for i in range(n):
        base = reciprocal(i, k1)
        expanded = set(base)
        for c in base:
            cand = reciprocal(c, half)
            if len(cand & base) >= 2 / 3 * len(cand):
                expanded |= cand
        for j in expanded:
            v[i, j] = np.exp(-dist[i, j] / dist[i].max())
        v[i] /= v[i].sum()
    if k2 > 1:
        v = np.array([np.mean([v[j] for j in rank[i][:k2]], axis=0) for i in range(n)])
    out = np.zeros(qg.shape)
    for q in range(nq):
        for g in range(qg.shape[1]):
            a, b = v[q], v[nq + g]
            jaccard = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[q, g] = (1 - lam) * jaccard + lam * qg[q, g]
    return out


def _case(seed, nq=5, ng=11, dim=4):
    rng = np.random.default_rng(seed)
    # Two clusters so that reciprocal neighbourhoods are non-trivial.
    centres = rng.normal(size=(3, dim)) * 2
    q = centres[rng.integers(0, 3, nq)] + rng.normal(size=(nq, dim))
    g = centres[rng.integers(0, 3, ng)] + rng.normal(size=(ng, dim))
    return (
        pairwise_distance(q, g, "euclidean"),
        pairwise_distance(q, q, "euclidean"),
        pairwise_distance(g, g, "euclidean"),
    )


@pytest.mark.parametrize(("k1", "k2", "lam"), [(4, 3, 0.3), (3, 1, 0.0), (6, 2, 0.5), (20, 6, 0.3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_set_based_loop(seed, k1, k2, lam):
    qg, qq, gg = _case(seed)
    out = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(out, rerank_loop(qg, qq, gg, k1, k2, lam), rtol=0, atol=1e-10)


def test_lambda_one_returns_original_and_bounds():
    qg, qq, gg = _case(2)
    np.testing.assert_array_equal(k_reciprocal_rerank(qg, qq, gg, lambda_value=1.0), qg)
    jac = k_reciprocal_rerank(qg, qq, gg, k1=4, k2=2, lambda_value=0.0)
    assert jac.shape == qg.shape
    assert (jac >= -1e-12).all() and (jac <= 1 + 1e-12).all()


def test_torch_in_torch_out():
    qg, qq, gg = _case(3)
    ref = k_reciprocal_rerank(qg, qq, gg, k1=4, k2=3)
    out = k_reciprocal_rerank(
        torch.from_numpy(qg), torch.from_numpy(qq), torch.from_numpy(gg), k1=4, k2=3
    )
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_rerank_bad_input():
    qg, qq, gg = _case(4)
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
