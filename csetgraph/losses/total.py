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
    r"""Combines the loss terms from a model's :class:`~csetgraph.models.cset.CSETOutput`.

    Reads ``logits`` (identity); the image rows ``triplet_feat`` (pid ``pids[i]``) and the
    ``W'`` rows ``head_feat`` (pid ``pids[head_rows[i]]``) for eq. 9, each one batch-hard
    term when present (the log's ``tri`` is the image rows' term, or the heads' when they
    replace the image rows; ``tri_heads`` the heads' term when both are present); and, when
    ``ca_logits`` is not ``None``, the cross-distillation towards ``logits`` (``cd``) and
    with ``ca_identity_weight > 0`` the CA logits' own identity loss (``ca_ce``); when
    ``head_logits`` is not ``None``, the ``W'`` rows' identity loss (``head_ce``).

    .. math::
        L = L_{CE} + \beta (L_{tri}^{img} + L_{tri}^{W'}) + \gamma L_{cd}
            + \delta L_{CE}^{CA} + \epsilon L_{CE}^{W'}

    Args:
        triplet_weight: ``beta`` of eq. 10 (each triplet term gets it).
        margin: triplet margin ``m`` of eq. 9.
        label_smoothing: of the identity losses.
        distill_weight: ``gamma``, weight of the cross-distillation term.
        normalize_triplet: L2-normalise the triplet features first (the default, as
            :class:`~csetgraph.config.LossConfig`; see
            :func:`~csetgraph.losses.triplet.cross_modal_triplet_loss` for why).
        ca_identity_weight: ``delta``, the CA logits' own identity loss (0: the paper's
            text, where the CA prediction is only distilled).
        distill_mutual: the distillation pulls both predictions towards each other; ``False``:
            only the CA logits learn, from the clean ones (which it leaves untouched).
        head_identity_weight: ``epsilon``, the identity loss of the ``W'`` rows' logits
            (clean and mixed class tokens; read only when the model outputs them).

    Returns:
        ``(total, terms)`` where ``terms`` maps ``"ce"``, ``"tri"`` (and ``"tri_heads"``,
        ``"cd"``, ``"ca_ce"``, ``"head_ce"``) and ``"total"`` to detached scalars for logging; with
        ``return_stats=True`` ``(total, terms, stats)``, ``stats`` a :class:`LossStats` of
        detached device tensors.
    """

    def __init__(
        self,
        triplet_weight: float = 0.7,
        margin: float = 0.3,
        label_smoothing: float = 0.0,
        distill_weight: float = 1.0,
        normalize_triplet: bool = True,
        ca_identity_weight: float = 0.0,
        distill_mutual: bool = True,
        head_identity_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.triplet_weight = triplet_weight
        self.margin = margin
        self.label_smoothing = label_smoothing
        self.distill_weight = distill_weight
        self.normalize_triplet = normalize_triplet
        self.ca_identity_weight = ca_identity_weight
        self.distill_mutual = distill_mutual
        self.head_identity_weight = head_identity_weight

    def _triplet(self, feat, pids, modality):
        return cross_modal_triplet_loss(
            feat, pids, modality, self.margin, self.normalize_triplet, return_stats=True
        )

    def forward(
        self, out: CSETOutput, pids: torch.Tensor, *, return_stats: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | tuple[torch.Tensor, dict, LossStats]:
        ce = identity_loss(out.logits, pids, self.label_smoothing)
        triplets = []  # (log name, loss, stats)
        if out.triplet_feat is not None:
            triplets.append(("tri", *self._triplet(out.triplet_feat, pids, out.modality)))
        if out.head_feat is not None:
            name = "tri_heads" if triplets else "tri"
            head_pids = pids[out.head_rows]
            triplets.append((name, *self._triplet(out.head_feat, head_pids, out.head_modality)))
        if not triplets:
            raise ValueError("the model output holds neither triplet_feat nor head_feat")
        tri = triplets[0][1] if len(triplets) == 1 else triplets[0][1] + triplets[1][1]
        total = ce + self.triplet_weight * tri
        terms = {"ce": ce.detach()}
        terms.update({name: loss.detach() for name, loss, _ in triplets})
        if out.ca_logits is not None:
            cd = cross_distillation_loss(out.ca_logits, out.logits, mutual=self.distill_mutual)
            total = total + self.distill_weight * cd
            terms["cd"] = cd.detach()
            if self.ca_identity_weight > 0:
                ca_ce = identity_loss(out.ca_logits, pids, self.label_smoothing)
                total = total + self.ca_identity_weight * ca_ce
                terms["ca_ce"] = ca_ce.detach()
        if out.head_logits is not None and self.head_identity_weight > 0:
            head_ce = identity_loss(out.head_logits, pids[out.head_rows], self.label_smoothing)
            total = total + self.head_identity_weight * head_ce
            terms["head_ce"] = head_ce.detach()
        terms["total"] = total.detach()
        if return_stats:
            head = triplets[1][2] if len(triplets) == 2 else None
            return total, terms, LossStats(triplet=triplets[0][2], head_triplet=head)
        return total, terms

    def extra_repr(self) -> str:
        return (
            f"triplet_weight={self.triplet_weight}, margin={self.margin}, "
            f"label_smoothing={self.label_smoothing}, distill_weight={self.distill_weight}, "
            f"normalize_triplet={self.normalize_triplet}, "
            f"ca_identity_weight={self.ca_identity_weight}, distill_mutual={self.distill_mutual}, "
            f"head_identity_weight={self.head_identity_weight}"
        )
