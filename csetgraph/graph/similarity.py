"""Similarity exchange (SE) as bipartite edge selection between two token sets (paper eq. 1-3).

For one pair, the *receiving* modality's tokens ``F`` (rows) and the *sending* modality's
tokens ``G`` (columns) are scored by

.. math::

    A &= \\mathrm{softmax}_{\\text{row}}(F F^\\top / \\tau)                      && (1) \\\\
    J_{ij} &= 1 - \\frac{f_i \\cdot g_j}{\\|f_i\\|^2 + \\|g_j\\|^2 - f_i \\cdot g_j} && (2) \\\\
    S &= \\alpha (1 - J) + (1 - \\alpha) A                                        && (3)

(``A`` is the intra-modality similarity of the receiving modality, ``J`` the Jaccard or
Tanimoto distance across modalities). ``similarity`` chooses what eq. 1 multiplies:
``"dot"`` the raw tokens, as written; ``"scaled"`` the raw tokens with attention's
``1/sqrt(d)``; ``"cosine"`` the L2-normalised tokens, so ``F F^T`` holds cosines (see
docs/model.md for why the raw product makes ``A`` pick the diagonal). ``J`` always reads
the raw tokens. Each receiving patch token keeps its best-scoring sending
patch token, and the top ``ratio`` fraction of those edges is selected; class tokens are never
exchanged. Nothing here is differentiable through the selection (argmax and top-k).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Readings of eq. 1's product ``F F^T``: raw tokens, ``1/sqrt(d)``-scaled, cosines.
SIMILARITIES = ("dot", "scaled", "cosine")


def _check_tokens(x_recv: Tensor, x_send: Tensor) -> None:
    if x_recv.dim() != 3 or x_send.dim() != 3:
        raise ValueError(
            "similarity exchange expects batched tokens (B, N, d) for both modalities, got "
            f"{tuple(x_recv.shape)} and {tuple(x_send.shape)}; add a batch dimension with "
            "x.unsqueeze(0) for a single pair"
        )
    if x_recv.shape != x_send.shape:
        raise ValueError(
            "the two modalities must have the same (B, N, d) token layout, got "
            f"{tuple(x_recv.shape)} and {tuple(x_send.shape)}"
        )


def similarity_scores(
    x_recv: Tensor,
    x_send: Tensor,
    alpha: float = 0.7,
    temperature: float = 1.0,
    eps: float = 1e-6,
    similarity: str = "dot",
) -> Tensor:
    """SE scores ``S`` between receiving tokens (rows) and sending tokens (columns), eq. 1-3.

    Args:
        x_recv: Tokens of the receiving modality; their own similarity gives ``A`` (eq. 1).
        x_send: Tokens of the sending modality.
        alpha: Weight ``α`` of the Jaccard term (the paper uses 0.7).
        temperature: Softmax temperature ``τ`` of eq. 1 (1 = the paper).
        eps: Lower clamp of the Tanimoto denominator ``‖f‖² + ‖g‖² − f·g`` (it is ``≥ 0`` and
            only zero when both tokens are zero; then ``1 − J = 0``).
        similarity: the product inside eq. 1's softmax: ``"dot"`` ``F F^T`` on the raw
            tokens (the paper as written), ``"scaled"`` ``F F^T / sqrt(d)``, ``"cosine"``
            ``F̂ F̂^T`` with ``F̂`` the L2-normalised tokens (each then divided by ``τ``).

    Returns:
        ``S`` with ``S[b, i, j]`` the score of receiving token ``i`` taking sending token ``j``.

    Shapes:
        x_recv, x_send: ``(B, N, d)``; output: ``(B, N, N)``, float32 (float64 for float64 input).
    """
    _check_tokens(x_recv, x_send)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    # Always fp32, whatever the autocast: under fp16, F F^T of tokens with a norm above ~256
    # overflows to inf and the softmax turns whole rows into NaN, silently spoiling the top-k.
    dtype = torch.promote_types(x_recv.dtype, torch.float32)  # fp16/bf16 up, fp64 kept
    with torch.autocast(x_recv.device.type, enabled=False):
        x_recv, x_send = x_recv.to(dtype), x_send.to(dtype)
        return alpha * tanimoto(x_recv, x_send, eps) + (1.0 - alpha) * intra_similarity(
            x_recv, temperature, similarity
        )


def intra_similarity(x: Tensor, temperature: float = 1.0, similarity: str = "dot") -> Tensor:
    """``A`` of eq. 1: the row softmax of the tokens' products (see :func:`similarity_scores`).

    Shapes:
        x: ``(B, N, d)``; output: ``(B, N, N)``, rows summing to 1.
    """
    if similarity == "cosine":
        x = F.normalize(x, dim=-1)
    logits = x @ x.transpose(1, 2)  # (B, N, N)
    if similarity == "scaled":
        logits = logits / math.sqrt(x.shape[-1])
    return torch.softmax(logits / temperature, dim=-1)


def tanimoto(x_recv: Tensor, x_send: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 - J`` of eq. 2, the Tanimoto similarity of every receiving and sending token.

    Shapes:
        x_recv, x_send: ``(B, N, d)``; output: ``(B, N, N)``.
    """
    dot = x_recv @ x_send.transpose(1, 2)  # (B, N, N)
    sq_recv = x_recv.pow(2).sum(-1, keepdim=True)  # (B, N, 1)
    sq_send = x_send.pow(2).sum(-1).unsqueeze(1)  # (B, 1, N)
    return dot / (sq_recv + sq_send - dot).clamp_min(eps)  # = 1 - J


def num_selected(num_patches: int, ratio: float) -> int:
    """Number of exchanged tokens per pair: ``floor(ratio * num_patches)`` (no minimum).

    A tiny tolerance absorbs floating-point error so that, e.g., ``0.29 * 100`` gives 29.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    return min(num_patches, math.floor(ratio * num_patches + 1e-9))


def select_exchange_edges(
    scores: Tensor, ratio: float, num_special_tokens: int = 1
) -> tuple[Tensor, Tensor]:
    """Select the SE edges of every pair of a batch from its scores.

    Restricted to patch tokens (the first ``num_special_tokens`` rows and columns, the class
    token, are skipped), each receiving token ``i`` keeps its best sending token
    ``j* = argmax_j S[b, i, j]``; of those ``P`` edges the ``floor(ratio * P)`` with the highest
    score are kept (see :func:`num_selected`), so every receiver appears at most once.

    Args:
        scores: SE scores from :func:`similarity_scores` (rows receivers, columns senders).
        ratio: Fraction of the patch tokens of a pair that receive a feature.
        num_special_tokens: Leading tokens that are never exchanged (1 = the class token).

    Returns:
        ``(edge_index, edge_score)``. ``edge_index[0]`` is the sender and ``edge_index[1]`` the
        receiver, both as flat node indices ``b * N + position`` into ``x.reshape(B * N, d)``
        of their own modality. Within a pair edges are sorted by decreasing score.

    Shapes:
        scores: ``(B, N, N)``; edge_index: ``(2, B * k)``; edge_score: ``(B * k,)`` with
        ``k = floor(ratio * (N - num_special_tokens))``.
    """
    if scores.dim() != 3 or scores.size(1) != scores.size(2):
        raise ValueError(f"scores must be (B, N, N), got {tuple(scores.shape)}")
    b, n, _ = scores.shape
    if not 0 <= num_special_tokens < n:
        raise ValueError(f"num_special_tokens must be in [0, N={n}), got {num_special_tokens}")
    s = num_special_tokens
    k = num_selected(n - s, ratio)
    patch_scores = scores[:, s:, s:]  # (B, P, P): patches only
    best, partner = patch_scores.max(dim=-1)  # (B, P): best sender of each receiver
    top, receiver = best.topk(k, dim=-1)  # (B, k)
    sender = partner.gather(1, receiver)  # (B, k)
    offset = (torch.arange(b, device=scores.device) * n).view(b, 1) + s  # (B, 1)
    edge_index = torch.stack([(sender + offset).reshape(-1), (receiver + offset).reshape(-1)])
    return edge_index, top.reshape(-1)
