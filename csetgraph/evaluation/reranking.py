"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), as the authors' released ``re_ranking`` function
computes it (the function AGW, TransReID and torchreid vendor, and with which every
re-ranked VI-ReID number in the literature was produced).

All queries and gallery items form one pool of ``N = Q + G`` items. With ``d`` the pool
matrix assembled from the three given blocks, ``[[q_q, q_g], [q_g^T, g_g]]``:

1. **Squared, normalised distances.** ``D = d ** 2`` (the given distances are squared), each
   column divided by its maximum, then transposed: ``T[i, j] = D[j, i] / max_l D[l, i]``
   (float32, as the reference). For the symmetric matrices of real features this is row
   ``i`` divided by its own maximum.
2. **Ranking.** ``rank[i]`` orders the pool by ``T[i]`` (ascending; ties by pool order).
   ``top(i, k)`` is the first ``k + 1`` items of ``rank[i]`` (``i`` itself included).
3. **k-reciprocal sets.** ``R(i, k) = {j in top(i, k) : i in top(j, k)}``.
4. **Expansion.** ``R*(i)`` is ``R(i, k1)`` united with ``R(c, h)``, ``h = round(k1 / 2)``
   (numpy's round half to even), for every ``c in R(i, k1)`` whose set overlaps strictly
   more than two thirds of it: ``|R(c, h) & R(i, k1)| > 2/3 |R(c, h)|``.
5. **Encoding.** ``V[i, j] = exp(-T[i, j])`` for ``j in R*(i)``, else 0; each row divided by
   its sum.
6. **Local query expansion** (``k2 > 1``): ``V[i] <- mean(V[j] for j in rank[i][:k2])``.
7. **Jaccard distance.** ``J[q, g] = 1 - m / (2 - m)`` with ``m = sum_l min(V[q, l],
   V[g, l])`` (each ``V`` row sums to 1, so ``sum_l max = 2 - m``).
8. **Mix.** ``out[q, g] = (1 - lambda) * J[q, g] + lambda * T[q, g]``: the Jaccard distance
   with the *normalised squared* distance, not the given one (``lambda_value=1`` returns
   ``T``'s query x gallery block, which ranks like the given distances).

The test (``tests/evaluation/test_eval_reranking.py``) checks this against a loop
transcription of the reference function to 1e-5, with identical rankings.

Two degenerate inputs on which the reference returns NaN are handled instead: a pool column
of zeros only (every feature identical) is left unscaled, and an item whose ``R*`` is empty
(possible only with more than ``k1`` exact duplicates of it) keeps itself as its only
neighbour.

Memory is ``O(N^2)`` (the pool distance matrix and its ranking), as in the reference: an
option for data-set-sized galleries (SYSU-MM01, RegDB, LLCM), not for 100,000 images.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["k_reciprocal_rerank"]


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN; re-ranking needs finite distances")
    return x


def _check_arguments(qg, qq, gg, k1, k2, lambda_value) -> None:
    nq, ng = qg.shape
    if qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise ValueError(
            f"expected q_q_dist {(nq, nq)} and g_g_dist {(ng, ng)} for q_g_dist {(nq, ng)}, "
            f"got {qq.shape} and {gg.shape}"
        )
    if nq == 0 or ng == 0:
        raise ValueError("re-ranking needs a non-empty query set and gallery")
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")


def normalised_pool_distance(qg: np.ndarray, qq: np.ndarray, gg: np.ndarray) -> np.ndarray:
    """Step 1: the pool's squared distances, column-normalised, transposed (float32).

    Shapes:
        qg: ``(Q, G)``, qq: ``(Q, Q)``, gg: ``(G, G)`` -> ``(N, N)``, ``N = Q + G``.
    """
    pool = np.block([[qq, qg], [qg.T, gg]]).astype(np.float32)  # (N, N)
    pool = np.power(pool, 2)
    col_max = pool.max(axis=0)
    col_max[col_max <= 0] = 1.0  # an all-zero column: any positive scale keeps it zero
    return np.ascontiguousarray((pool / col_max).T)


def _top_mask(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """Sparse boolean ``(N, N)``: ``M[i, j]`` = ``j`` among the first ``k`` of ``rank[i]``."""
    n = rank.shape[0]
    k = min(k, rank.shape[1])
    rows = np.repeat(np.arange(n), k)
    cols = rank[:, :k].reshape(-1)  # (N * k,)
    return sp.csr_matrix((np.ones(n * k, dtype=np.int32), (rows, cols)), shape=(n, n))


def reciprocal_sets(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """Step 3: ``R[i, j] = 1`` iff ``j in R(i, k)``, as a sparse ``(N, N)`` 0/1 matrix."""
    top = _top_mask(rank, k + 1)
    return top.multiply(top.T).tocsr()


def expanded_sets(rank: np.ndarray, k1: int) -> sp.csr_matrix:
    """Step 4: ``R*(i)`` of every pool item, as a sparse ``(N, N)`` 0/1 matrix."""
    n = rank.shape[0]
    r_k1 = reciprocal_sets(rank, k1)
    r_half = reciprocal_sets(rank, int(np.around(k1 / 2.0)))
    # overlap[i, c] = |R(i, k1) & R(c, h)|, kept only for candidates c in R(i, k1).
    overlap = (r_k1 @ r_half.T).multiply(r_k1).tocoo()
    half_size = np.asarray(r_half.sum(axis=1)).ravel()  # (N,)
    # Integer form of "overlap > 2/3 * size": the same decision as the reference's float
    # comparison for every set size up to 3000 (checked), far beyond round(k1 / 2) + 1.
    ok = 3 * overlap.data > 2 * half_size[overlap.col]
    accepted = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.int32), (overlap.row[ok], overlap.col[ok])),
        shape=(n, n),
    )
    r_star = ((r_k1 + accepted @ r_half) > 0).tocsr().astype(np.int32)
    empty = np.flatnonzero(np.diff(r_star.indptr) == 0)
    if len(empty):  # only with > k1 exact duplicates; the reference would divide by zero
        r_star = r_star + sp.csr_matrix(
            (np.ones(len(empty), dtype=np.int32), (empty, empty)), shape=(n, n)
        )
    return r_star.tocsr()


def encode(dist: np.ndarray, r_star: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """Steps 5-6: the Gaussian-kernel encoding ``V``, rows summing to 1, query-expanded."""
    n = dist.shape[0]
    coo = r_star.tocoo()
    weights = np.exp(-dist[coo.row, coo.col].astype(np.float64))
    v = sp.csr_matrix((weights, (coo.row, coo.col)), shape=(n, n))
    v = sp.diags(1.0 / np.asarray(v.sum(axis=1)).ravel()) @ v
    if k2 > 1:
        expand = _top_mask(rank, k2).astype(np.float64) / min(k2, n)
        v = expand @ v
    return v.tocsr()


def jaccard_distance(v: sp.csr_matrix, nq: int) -> np.ndarray:
    """Step 7: ``J[q, g]`` between the first ``nq`` rows of ``v`` and the others.

    Computed column by column of ``V``: only items that share a column contribute to the
    sum of minima, so the work follows the sparsity, not ``Q * G * N``.
    """
    n = v.shape[0]
    vq, vg = v[:nq].tocsc(), v[nq:].tocsc()
    min_sum = np.zeros((nq, n - nq))
    for col in range(n):
        a = slice(vq.indptr[col], vq.indptr[col + 1])
        b = slice(vg.indptr[col], vg.indptr[col + 1])
        if a.start == a.stop or b.start == b.stop:
            continue
        rows_q, rows_g = vq.indices[a], vg.indices[b]
        min_sum[np.ix_(rows_q, rows_g)] += np.minimum(vq.data[a][:, None], vg.data[b][None, :])
    return 1.0 - min_sum / (2.0 - min_sum)


def k_reciprocal_rerank(
    q_g_dist,
    q_q_dist,
    g_g_dist,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
):
    """Re-rank query x gallery distances as the authors' released ``re_ranking`` does.

    See the module docstring for the exact definition (the distances are squared and
    normalised inside; the result mixes the Jaccard distance with those).

    Args:
        q_g_dist: Query x gallery distances (smaller = closer), e.g. Euclidean or cosine.
        q_q_dist: Query x query distances.
        g_g_dist: Gallery x gallery distances.
        k1: Size of the k-reciprocal neighbourhood (reference default 20).
        k2: Size of the local query expansion, ``k2 = 1`` disables it (default 6).
        lambda_value: Weight of the normalised squared distance, in [0, 1] (default 0.3).

    Returns:
        Re-ranked query x gallery distances, float64; a numpy array for numpy input, a
        tensor on the input's device for tensor input.

    Shapes:
        q_g_dist: ``(Q, G)``; q_q_dist: ``(Q, Q)``; g_g_dist: ``(G, G)``; output ``(Q, G)``.
    """
    is_torch = isinstance(q_g_dist, torch.Tensor)
    device = q_g_dist.device if is_torch else None
    qg = _to_numpy(q_g_dist, "q_g_dist")
    qq = _to_numpy(q_q_dist, "q_q_dist")
    gg = _to_numpy(g_g_dist, "g_g_dist")
    _check_arguments(qg, qq, gg, k1, k2, lambda_value)
    nq = qg.shape[0]

    dist = normalised_pool_distance(qg, qq, gg)  # (N, N) float32
    rank = np.argsort(dist, axis=1, kind="stable")  # (N, N)
    v = encode(dist, expanded_sets(rank, k1), rank, k2)  # (N, N) sparse, rows sum to 1
    original = dist[:nq, nq:].astype(np.float64)  # (Q, G)
    out = (1.0 - lambda_value) * jaccard_distance(v, nq) + lambda_value * original
    return torch.as_tensor(out, device=device) if is_torch else out
