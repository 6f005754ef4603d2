"""The total objective ``L = L_CE + beta L_tri + gamma L_cd`` (eq. 10 plus cross-distillation)."""

from __future__ import annotations

import torch
from torch import nn

from csetgraph.losses.distillation import cross_distillation_loss
from csetgraph.losses.identity import identity_loss
from csetgraph.losses.triplet import cross_modal_triplet_loss


class CSETLoss(nn.Module):
    """Combines the loss terms from a model's output dict.

    Reads ``logits`` (identity), ``tri_feat``/``tri_modality`` (triplet; the row ``i`` of
    ``tri_feat`` has pid ``pids[tri_pids_index[i]]``, or ``pids[i]`` without an index) and,
    when present, ``cd_logits``/``cd_target_logits`` (cross-distillation).

    Returns:
        ``(total, terms)`` where ``terms`` maps ``"ce"``, ``"tri"`` (and ``"cd"``) to detached
        scalars for logging.
    """

    def __init__(
        self,
        triplet_weight: float = 0.7,
        margin: float = 0.3,
        label_smoothing: float = 0.0,
        distill_weight: float = 1.0,
        normalize_triplet: bool = False,
    ) -> None:
        super().__init__()
        self.triplet_weight = triplet_weight
        self.margin = margin
        self.label_smoothing = label_smoothing
        self.distill_weight = distill_weight
        self.normalize_triplet = normalize_triplet

    def forward(
        self, out: dict[str, torch.Tensor], pids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = identity_loss(out["logits"], pids, self.label_smoothing)
        tri_pids = pids[out["tri_pids_index"]] if "tri_pids_index" in out else pids
        tri = cross_modal_triplet_loss(
            out["tri_feat"], tri_pids, out["tri_modality"], self.margin, self.normalize_triplet
        )
        total = ce + self.triplet_weight * tri
        terms = {"ce": ce.detach(), "tri": tri.detach()}
        if "cd_logits" in out:
            cd = cross_distillation_loss(out["cd_logits"], out["cd_target_logits"])
            total = total + self.distill_weight * cd
            terms["cd"] = cd.detach()
        terms["total"] = total.detach()
        return total, terms

    def extra_repr(self) -> str:
        return (
            f"triplet_weight={self.triplet_weight}, margin={self.margin}, "
            f"label_smoothing={self.label_smoothing}, distill_weight={self.distill_weight}, "
            f"normalize_triplet={self.normalize_triplet}"
        )
