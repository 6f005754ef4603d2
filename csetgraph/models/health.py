"""Mechanism health: what the model's training forward measures about SE, CA and MHGA.

Each statistic is a detached tensor left on the device, so computing it costs a few small
kernels and no host synchronisation; the trainer sums them between log points and reads them
back once per ``train.log_every`` steps (:mod:`csetgraph.engine.health`). The similarity
exchange measures itself (:class:`~csetgraph.nn.exchange.ExchangeStats`, inside each
:class:`~csetgraph.nn.exchange.ExchangeEdges` of ``CSETOutput.se_info``) and the triplet loss
too (:class:`~csetgraph.losses.triplet.TripletStats`); this module holds the rest:

* the cosine between the mixed and the clean class token after the last block (per receiving
  modality), after the encoder's final norm, which is what the heads and CA read;
* the entropy of the CA logits;
* the attention mass each MHGA relation (same, adjacent, distant) receives, and the mass a
  uniform attention over the same edges would give it, as the yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from csetgraph.graph import DISTANT, token_relation


@dataclass
class ModelHealth:
    """Health statistics of one training forward (detached device tensors).

    Attributes:
        se_layers: block index of each ``CSETOutput.se_info`` entry (exchange after block k).
        class_cosine: receiving modality (``"vis"`` for ``v2i``, ``"ir"`` for ``i2v``) ->
            mean cosine between its mixed and clean class token after the last block (0-d).
        ca_entropy: mean entropy (nats) of the softmax of the CA logits (0-d), or ``None``.
        num_classes: identities the logits range over (``log`` of it is the uniform entropy).
        mhga_mass: ``(3,)`` mean attention mass per target node on its same, adjacent and
            distant neighbours (sums to 1), or ``None`` without MHGA.
        mhga_uniform: ``(3,)`` the same for a uniform attention over the graph's edges.
        triplet_feature: what the triplet loss trains: ``"heads"`` (the ``W'`` heads of the
            clean and mixed class tokens) or ``"neck"`` (the neck input, the retrieval feature
            before its BatchNorm).
    """

    se_layers: tuple[int, ...]
    class_cosine: dict[str, Tensor]
    ca_entropy: Tensor | None
    num_classes: int
    mhga_mass: Tensor | None
    mhga_uniform: Tensor | None
    triplet_feature: str


def class_token_cosine(clean: Tensor, mixed: Tensor) -> Tensor:
    """Mean cosine between the class tokens (position 0) of two token sets.

    Shapes:
        clean, mixed: ``(B, N, C)`` -> 0-d float32.
    """
    with torch.no_grad():
        return F.cosine_similarity(clean[:, 0].float(), mixed[:, 0].float(), dim=-1).mean()


def logit_entropy(logits: Tensor) -> Tensor:
    """Mean entropy ``-sum_c p_c log p_c`` (nats) of the softmax of each row of ``logits``.

    Shapes:
        logits: ``(n, C)`` -> 0-d float32 (at most ``log C``, reached by uniform rows).
    """
    with torch.no_grad():
        logp = F.log_softmax(logits.float(), dim=-1)
        return -(logp.exp() * logp).sum(-1).mean()


def relation_codes(
    h: int, w: int, *, adjacency: str, paired: bool, device: torch.device | str | None = None
) -> Tensor:
    """Relation code ``[target, source]`` of every node pair of a token graph, built on
    ``device`` (no host-to-device copy): as :func:`csetgraph.graph.relation_matrix`.

    Shapes:
        output: ``(n, n)`` long, ``n = 2N`` (paired) or ``N``, ``N = 1 + h * w``.
    """
    pos = torch.arange(1 + h * w, device=device)
    if paired:
        pos = torch.cat([pos, pos])  # vis nodes, then ir nodes
    return token_relation(pos.view(-1, 1), pos.view(1, -1), grid_width=w, adjacency=adjacency)


def relation_mass(attention: Tensor, relation: Tensor) -> Tensor:
    """Mean attention mass each relation receives per target node.

    ``mass[r] = mean_{b, head, i} sum_j attention[b, head, i, j] * [relation[i, j] == r]``
    for ``r`` in same, adjacent, distant. Rows of ``attention`` sum to 1 (zero where a pair
    has no edge), so the three masses sum to 1.

    Shapes:
        attention: ``(B, H, n, n)`` ``[target, source]``; relation: ``(n, n)`` codes ->
        ``(3,)`` float32.
    """
    with torch.no_grad():
        codes = torch.arange(3, device=relation.device)
        onehot = (relation.unsqueeze(-1) == codes).to(torch.float32)  # (n, n, 3)
        per_target = torch.einsum("bhij,ijr->bhir", attention.float(), onehot)  # (B, H, n, 3)
        return per_target.mean(dim=(0, 1, 2))


def uniform_mass(relation: Tensor, edges: Tensor | None = None) -> Tensor:
    """:func:`relation_mass` of a uniform attention over the graph's edges (all pairs when
    ``edges`` is ``None``): the share of each relation among a node's neighbours, averaged.

    Shapes:
        relation: ``(n, n)``; edges: ``(n, n)`` bool or ``None`` -> ``(3,)`` float32.
    """
    with torch.no_grad():
        mask = torch.ones_like(relation, dtype=torch.float32) if edges is None else edges.float()
        uniform = mask / mask.sum(-1, keepdim=True).clamp_min(1.0)  # (n, n)
        return relation_mass(uniform.view(1, 1, *uniform.shape), relation)


def local_edges(relation: Tensor) -> Tensor:
    """The edges of the ``local`` MHGA graph: every pair that is not ``distant``."""
    return relation != DISTANT


__all__ = [
    "ModelHealth",
    "class_token_cosine",
    "local_edges",
    "logit_entropy",
    "relation_codes",
    "relation_mass",
    "uniform_mass",
]
