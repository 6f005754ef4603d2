"""The total objective ``L = L_CE + beta L_tri + gamma L_cd`` (eq. 10 plus cross-distillation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from csetgraph.losses.distillation import cross_distillation_loss
from csetgraph.losses.identity import identity_loss
from csetgraph.losses.triplet import TripletStats, cross_modal_triplet_loss

if TYPE_CHECKING:
    from csetgraph.models.cset import CSETOutput


class LossStats(NamedTuple):
    """What the loss measures about the mechanisms it trains (``return_stats=True``)."""

    triplet: TripletStats
    head_triplet: TripletStats | None = None  # the W' rows' term when it joins the image rows


class CSETLoss(nn.Module):
    """Combines the loss terms from a model's :class:`~csetgraph.models.cset.CSETOutput`.

    Reads ``logits`` (identity), ``tri_feat``/``tri_modality`` (triplet; row ``i`` of
    ``tri_feat`` has pid ``pids[tri_pids_index[i]]``, or ``pids[i]`` when the index is
    ``None``) and, when ``cd_logits`` is not ``None``, ``cd_logits``/``cd_target_logits``
    (cross-distillation).

    Args:
        triplet_weight: ``beta`` of eq. 10.
        margin: triplet margin ``m`` of eq. 9.
        label_smoothing: of the identity loss.
        distill_weight: ``gamma``, weight of the cross-distillation term.
        normalize_triplet: L2-normalise the triplet features first (the default, as
            :class:`~csetgraph.config.LossConfig`; see
            :func:`~csetgraph.losses.triplet.cross_modal_triplet_loss` for why).

    Returns:
        ``(total, terms)`` where ``terms`` maps ``"ce"``, ``"tri"`` (and ``"cd"``) and
        ``"total"`` to detached scalars for logging; with ``return_stats=True``
        ``(total, terms, stats)``, ``stats`` a :class:`LossStats` of detached device tensors.
    """

    def __init__(
        self,
        triplet_weight: float = 0.7,
        margin: float = 0.3,
        label_smoothing: float = 0.0,
        distill_weight: float = 1.0,
        normalize_triplet: bool = True,
    ) -> None:
        super().__init__()
        self.triplet_weight = triplet_weight
        self.margin = margin
        self.label_smoothing = label_smoothing
        self.distill_weight = distill_weight
        self.normalize_triplet = normalize_triplet

    def forward(
        self, out: CSETOutput, pids: torch.Tensor, *, return_stats: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | tuple[torch.Tensor, dict, LossStats]:
        ce = identity_loss(out.logits, pids, self.label_smoothing)
        tri_pids = pids if out.tri_pids_index is None else pids[out.tri_pids_index]
        tri, tri_stats = cross_modal_triplet_loss(
            out.tri_feat,
            tri_pids,
            out.tri_modality,
            self.margin,
            self.normalize_triplet,
            return_stats=True,
        )
        total = ce + self.triplet_weight * tri
        terms = {"ce": ce.detach(), "tri": tri.detach()}
        if out.cd_logits is not None:
            cd = cross_distillation_loss(out.cd_logits, out.cd_target_logits)
            total = total + self.distill_weight * cd
            terms["cd"] = cd.detach()
        terms["total"] = total.detach()
        if return_stats:
            return total, terms, LossStats(triplet=tri_stats)
        return total, terms

    def extra_repr(self) -> str:
        return (
            f"triplet_weight={self.triplet_weight}, margin={self.margin}, "
            f"label_smoothing={self.label_smoothing}, distill_weight={self.distill_weight}, "
            f"normalize_triplet={self.normalize_triplet}"
        )
