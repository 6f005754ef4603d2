"""Similarity exchange (SE, paper section 3.1): swap the most correlated tokens across modalities.

The edges come from :func:`csetgraph.graph.select_exchange_edges`; this module moves the
features along them. Along each selected edge the receiving token's feature is *replaced* by
the sending token's, out of place, so gradients reach the sender.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from csetgraph.graph.similarity import SIMILARITIES, select_exchange_edges, similarity_scores

#: ``model.se.direction``: ``i2v`` infrared tokens receive, ``v2i`` visible ones, or both.
SE_DIRECTIONS = ("none", "i2v", "v2i", "both")


class ExchangeStats(NamedTuple):
    """Health statistics of one SE direction over a batch: detached 0-d float tensors, left on
    the device (reading them is the caller's host synchronisation, at its own pace).

    Attributes:
        tokens_per_image: selected edges per pair, ``E / B`` (``floor(ratio * patches)``).
        a_diagonal: mean over the receiving patch tokens ``i`` of ``A[i, i]``, the weight the
            intra-modality term ``Softmax(F Fᵀ)`` of eq. 1 gives the receiver's own position;
            near 1 that term votes for the token at the receiver's position in the other image.
        same_position: share of the selected edges whose sender sits at the receiver's own
            position in the other image (0 when nothing is selected).
        mean_score: mean score ``S`` (eq. 3) of the selected edges (0 when nothing is selected).
    """

    tokens_per_image: Tensor
    a_diagonal: Tensor
    same_position: Tensor
    mean_score: Tensor


class ExchangeEdges(NamedTuple):
    """Selected SE edges of one direction for a batch of pairs.

    Attributes:
        edge_index: ``(2, E)`` long; row 0 senders, row 1 receivers, as flat indices
            ``b * N + position`` into the ``(B * N, d)`` tokens of their own modality.
        score: ``(E,)`` SE score ``S`` of each edge (eq. 3).
        stats: the direction's :class:`ExchangeStats` (``None`` when not computed).
    """

    edge_index: Tensor
    score: Tensor
    stats: ExchangeStats | None = None


def exchange_statistics(
    edge_index: Tensor, score: Tensor, a: Tensor, num_special_tokens: int = 1
) -> ExchangeStats:
    """The :class:`ExchangeStats` of one direction from its edges and its ``A`` (eq. 1).

    Both modalities' tokens are flattened the same way (``b * N + position``), so an edge is
    same-position exactly when its sender and receiver indices are equal.

    Args:
        edge_index: ``(2, E)`` flat ``[sender, receiver]`` indices (:class:`ExchangeEdges`).
        score: ``(E,)`` scores of the selected edges.
        a: ``(B, N, N)`` intra-modality similarity of the receiving modality (rows sum to 1).
        num_special_tokens: leading tokens that never receive (the class token); their rows
            of ``A`` are left out of the diagonal mean.

    Shapes:
        edge_index ``(2, E)``, score ``(E,)``, a ``(B, N, N)`` -> four 0-d float32 tensors.
    """
    with torch.no_grad():
        b = a.shape[0]
        diag = a.diagonal(dim1=1, dim2=2)[:, num_special_tokens:]  # (B, P)
        # torch.full is a device fill, not a host-to-device copy (which could synchronise).
        count = torch.full((), float(score.numel()), dtype=torch.float32, device=score.device)
        same = (edge_index[0] == edge_index[1]).float().sum()
        return ExchangeStats(
            tokens_per_image=count / b,
            a_diagonal=diag.float().mean(),
            same_position=same / count.clamp_min(1.0),
            mean_score=score.float().sum() / count.clamp_min(1.0),
        )


def exchange_tokens(x_recv: Tensor, x_send: Tensor, edge_index: Tensor) -> Tensor:
    """Replace receiving tokens by their senders' features along ``edge_index`` (out of place).

    Args:
        x_recv: Tokens of the receiving modality.
        x_send: Tokens of the sending modality.
        edge_index: ``(2, E)`` flat ``[sender, receiver]`` indices; each receiver at most once.

    Returns:
        A new tensor equal to ``x_recv`` except at the receivers, which hold the senders'
        features. Gradients flow to ``x_send`` at the senders and to ``x_recv`` elsewhere.

    Shapes:
        x_recv, x_send: ``(B, N, d)``; output: ``(B, N, d)``.
    """
    b, n, d = x_recv.shape
    flat_recv = x_recv.reshape(b * n, d)  # (B*N, d)
    flat_send = x_send.reshape(b * n, d)  # (B*N, d)
    sender, receiver = edge_index[0], edge_index[1]
    mixed = flat_recv.index_copy(0, receiver, flat_send.index_select(0, sender))  # (B*N, d)
    return mixed.view(b, n, d)  # (B, N, d)


class SimilarityExchange(torch.nn.Module):
    r"""Exchange the most similar patch tokens between a visible and an infrared token set.

    For direction ``i2v`` the infrared tokens receive: the scores are
    :math:`S_{I \to V} = \alpha (1 - J_{I \to V}) + (1 - \alpha) A_I` (eq. 1-3; rows are
    infrared tokens, so ``A`` is the infrared intra-modality similarity), every infrared patch
    keeps its best visible partner, and the top ``ratio`` of those infrared patches take their
    partner's feature. ``v2i`` is the mirror image (visible tokens receive, ``A_V``), ``both``
    does the two from the same pre-exchange features, ``none`` is the identity. Class tokens
    are never exchanged. The selection (argmax, top-k) is computed without gradient; the
    exchanged features carry the sender's gradient.

    Args:
        alpha: Weight ``α`` of the Jaccard term in eq. 3 (the paper's 0.7).
        ratio: Fraction of each image's patch tokens that receive a feature:
            ``floor(ratio * h * w)`` per image and direction. Default 0.1 (the paper does not
            state it): with 16 x 8 patches, 12 of 128 patches are exchanged.
        temperature: Softmax temperature ``τ`` of eq. 1 (1 = the paper).
        direction: ``"i2v"``, ``"v2i"``, ``"both"`` or ``"none"``.
        num_special_tokens: Leading tokens never exchanged (1 = the class token).
        similarity: the product in eq. 1's softmax: ``"dot"`` (raw tokens, the paper as
            written), ``"scaled"`` (``1/sqrt(d)``) or ``"cosine"`` (L2-normalised tokens);
            see :func:`~csetgraph.graph.similarity_scores`.

    Shapes:
        - **input:** ``x_vis`` :math:`(B, N, d)`, ``x_ir`` :math:`(B, N, d)`.
        - **output:** ``(mixed_vis, mixed_ir, info)``, both :math:`(B, N, d)`; ``info`` maps
          ``"i2v"`` and ``"v2i"`` to :class:`ExchangeEdges` (or ``None`` when not run).
    """

    def __init__(
        self,
        alpha: float = 0.7,
        ratio: float = 0.1,
        temperature: float = 1.0,
        direction: str = "both",
        num_special_tokens: int = 1,
        similarity: str = "dot",
    ):
        super().__init__()
        if direction not in SE_DIRECTIONS:
            raise ValueError(f"direction must be one of {SE_DIRECTIONS}, got {direction!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.alpha = alpha
        self.similarity = similarity
        self.ratio = ratio
        self.temperature = temperature
        self.direction = direction
        self.num_special_tokens = num_special_tokens

    def scores(self, x_recv: Tensor, x_send: Tensor, alpha: float | None = None) -> Tensor:
        """The SE scores ``S`` (eq. 1-3) this module selects by; ``alpha=0`` gives ``A`` alone.

        The one place the module calls the score function, so the health statistic ``A``
        and the selection always read the same eq. 1.
        """
        alpha = self.alpha if alpha is None else alpha
        return similarity_scores(
            x_recv.detach(),
            x_send.detach(),
            alpha=alpha,
            temperature=self.temperature,
            similarity=self.similarity,
        )

    def select(self, x_recv: Tensor, x_send: Tensor) -> ExchangeEdges:
        """SE edges from ``x_send`` into ``x_recv`` (no gradient: the selection is discrete),
        with their :class:`ExchangeStats` (on the device, no host synchronisation)."""
        with torch.no_grad():
            scores = self.scores(x_recv, x_send)
            edge_index, score = select_exchange_edges(scores, self.ratio, self.num_special_tokens)
            a = self.scores(x_recv, x_send, alpha=0.0)  # (B, N, N): eq. 1 alone
            stats = exchange_statistics(edge_index, score, a, self.num_special_tokens)
        return ExchangeEdges(edge_index, score, stats)

    def forward(
        self, x_vis: Tensor, x_ir: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, ExchangeEdges | None]]:
        if x_vis.dim() != 3 or x_vis.shape != x_ir.shape:
            raise ValueError(
                "x_vis and x_ir must both be (B, N, d) tokens of aligned pairs, got "
                f"{tuple(x_vis.shape)} and {tuple(x_ir.shape)}"
            )
        info: dict[str, ExchangeEdges | None] = {"i2v": None, "v2i": None}
        mixed_vis, mixed_ir = x_vis, x_ir
        # Both directions read the pre-exchange tokens, so 'both' is order independent.
        if self.direction in ("i2v", "both"):
            info["i2v"] = self.select(x_ir, x_vis)
            mixed_ir = exchange_tokens(x_ir, x_vis, info["i2v"].edge_index)
        if self.direction in ("v2i", "both"):
            info["v2i"] = self.select(x_vis, x_ir)
            mixed_vis = exchange_tokens(x_vis, x_ir, info["v2i"].edge_index)
        return mixed_vis, mixed_ir, info

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, ratio={self.ratio}, temperature={self.temperature}, "
            f"direction={self.direction!r}, similarity={self.similarity!r}"
        )
