"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), written from the paper's description.

All queries and gallery items form one pool of ``N = Q + G`` items with the distance
matrix ``D`` assembled from the three blocks. For pool items ``i`` (ties in the
neighbour ranking broken by pool order, stable sort):

* ``N(i, k)``: the ``k + 1`` nearest pool items of ``i``, which include ``i`` itself
  (its distance to itself is the smallest);
* ``R(i, k) = {j in N(i, k) : i in N(j, k)}`` (k-reciprocal neighbours);
* ``R*(i)``: ``R(i, k1)`` united with every ``R(c, round(k1 / 2))``, ``c in R(i, k1)``,
  that satisfies ``|R(c, k1/2) & R(i, k1)| >= 2/3 |R(c, k1/2)|`` (paper eq. 6);
* ``V[i, j] = exp(-D[i, j] / max_l D[i, l])`` for ``j in R*(i)``, else 0, then each row
  is normalised to sum 1. Dividing by the row maximum makes the Gaussian kernel
  independent of the distance scale; the row normalisation makes every ``V[i]`` a
  distribution so that the min/max comparison below compares like with like (the
  authors' released code does both);
* local query expansion: ``V[i] <- mean_{j in N(i, k2 - 1)} V[j]`` (the ``k2`` nearest
  items, ``i`` included);
* Jaccard distance ``d_J(q, g) = 1 - sum_l min(V[q,l], V[g,l]) / sum_l max(V[q,l], V[g,l])``;
* final distance ``(1 - lambda) * d_J + lambda * d(q, g)``, with ``d`` the given
  query x gallery distances, unchanged (so ``lambda_value=1`` returns them exactly).

Because ``d_J`` is in [0, 1], ``lambda_value`` weighs two comparable terms when the
original distances are on a similar scale (cosine distance is in [0, 2]); for Euclidean
distances of unnormalised features, normalise the features first.

Memory is ``O(N^2)`` (the pool distance matrix and its ranking); this is an option for
data-set-sized galleries (SYSU-MM01, RegDB, LLCM), not for 100,000-image galleries.
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


def _neighbour_mask(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """Sparse boolean ``(N, N)`` matrix with ``M[i, j] = j in the first k of rank[i]``."""
    n = rank.shape[0]
    k = min(k, rank.shape[1])
    rows = np.repeat(np.arange(n), k)
    cols = rank[:, :k].reshape(-1)  # (N * k,)
    return sp.csr_matrix((np.ones(n * k, dtype=np.int32), (rows, cols)), shape=(n, n))


def k_reciprocal_rerank(
    q_g_dist,
    q_q_dist,
    g_g_dist,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
):
    """Re-rank query x gallery distances with k-reciprocal encoding.

    See the module docstring for the exact definition.

    Args:
        q_g_dist: Query x gallery distances (smaller = closer).
        q_q_dist: Query x query distances.
        g_g_dist: Gallery x gallery distances.
        k1: Size of the k-reciprocal neighbourhood.
        k2: Size of the local query expansion (``k2 = 1`` disables it).
        lambda_value: Weight of the original distance in the final one, in [0, 1].

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
    if lambda_value == 1.0:
        out = qg.copy()
        return torch.as_tensor(out, device=device) if is_torch else out

    n = nq + ng
    dist = np.block([[qq, qg], [qg.T, gg]])  # (N, N) pool distances
    rank = np.argsort(dist, axis=1, kind="stable")  # (N, N)

    # Reciprocal neighbour sets as sparse boolean matrices: R[i, j] = j in R(i, k).
    half = int(np.around(k1 / 2))
    nk1 = _neighbour_mask(rank, k1 + 1)
    nhalf = _neighbour_mask(rank, half + 1)
    r_k1 = nk1.multiply(nk1.T).tocsr()  # (N, N)
    r_half = nhalf.multiply(nhalf.T).tocsr()  # (N, N)

    # Expansion: candidate c in R(i, k1) is accepted when enough of R(c, k1/2) lies in
    # R(i, k1). overlap[i, c] = |R(i, k1) & R(c, k1/2)|, needed only where r_k1[i, c].
    overlap = (r_k1 @ r_half.T).multiply(r_k1).tocsr()  # (N, N)
    half_size = np.asarray(r_half.sum(axis=1)).ravel()  # (N,)
    coo = overlap.tocoo()
    ok = 3 * coo.data >= 2 * half_size[coo.col]
    accepted = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.int32), (coo.row[ok], coo.col[ok])), shape=(n, n)
    )
    r_star = ((r_k1 + accepted @ r_half) > 0).tocoo()

    # Gaussian-kernel weights on R*, rows normalised to sum 1.
    row_max = dist.max(axis=1)
    row_max[row_max <= 0] = 1.0  # all-zero rows: any positive scale gives exp(0) = 1
    weights = np.exp(-dist[r_star.row, r_star.col] / row_max[r_star.row])
    v = sp.csr_matrix((weights, (r_star.row, r_star.col)), shape=(n, n))
    v = sp.diags(1.0 / np.asarray(v.sum(axis=1)).ravel()) @ v

    if k2 > 1:
        # Local query expansion: average the encodings of the k2 nearest items.
        expand = _neighbour_mask(rank, k2).astype(np.float64) / min(k2, n)
        v = (expand @ v).tocsr()

    # sum_l min(V[q, l], V[g, l]) for every query q and gallery g, column by column of V:
    # only items that share column l contribute, so the work follows the sparsity.
    vq = v[:nq].tocsc()
    vg = v[nq:].tocsc()
    min_sum = np.zeros((nq, ng))
    for col in range(n):
        a, b = slice(vq.indptr[col], vq.indptr[col + 1]), slice(vg.indptr[col], vg.indptr[col + 1])
        if a.start == a.stop or b.start == b.stop:
            continue
        rows_q, rows_g = vq.indices[a], vg.indices[b]
        min_sum[np.ix_(rows_q, rows_g)] += np.minimum(vq.data[a][:, None], vg.data[b][None, :])
    # Each V row sums to 1, so sum_l max = 2 - sum_l min.
    jaccard = 1.0 - min_sum / (2.0 - min_sum)
    out = (1.0 - lambda_value) * jaccard + lambda_value * qg
    return torch.as_tensor(out, device=device) if is_torch else out
