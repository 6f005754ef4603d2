"""Shared by the evaluation tests: a loop transcription of the community re-ranking function.

``reference_re_ranking`` is written, one item at a time, from a reading of the public function
(Zhong et al.'s person-re-ranking repository, as vendored by torchreid's ``rerank.py``, AGW
and TransReID): squared pool distances in float32, columns divided by their maximum then
transposed, k-reciprocal sets from ``np.argsort``, expansion when the overlap is strictly
more than 2/3, ``exp(-d)`` weights, query expansion over the ``k2`` nearest, Jaccard through
the sum of minima, and the mix with the normalised distance. It shares no code with
``csetgraph.evaluation.reranking``.
"""

import numpy as np
import pytest


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    original = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    V = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = original.shape[0]

    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_recip = forward[np.where(backward == i)[0]]
        expansion = k_recip
        for candidate in k_recip:
            h = int(np.around(k1 / 2.0))
            c_forward = initial_rank[candidate, : h + 1]
            c_backward = initial_rank[c_forward, : h + 1]
            c_recip = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_recip, k_recip)) > 2.0 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)

    original = original[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for col in nonzero:
            rows = inv_index[col]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(V[i, col], V[rows, col])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:query_num, query_num:]


@pytest.fixture
def reference_rerank():
    """The reference re-ranking function (see the module docstring)."""
    return reference_re_ranking
