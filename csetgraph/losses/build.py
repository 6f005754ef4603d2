"""The adapter from :class:`~csetgraph.config.LossConfig` to :class:`CSETLoss`."""

from __future__ import annotations

from csetgraph.config import LossConfig
from csetgraph.losses.total import CSETLoss


def build_criterion(loss_cfg: LossConfig) -> CSETLoss:
    """The total objective with the configured weights, margin and options."""
    return CSETLoss(
        triplet_weight=loss_cfg.triplet_weight,
        margin=loss_cfg.margin,
        label_smoothing=loss_cfg.label_smoothing,
        distill_weight=loss_cfg.distill_weight,
        normalize_triplet=loss_cfg.normalize_triplet,
        ca_identity_weight=loss_cfg.ca_identity_weight,
        distill_mutual=loss_cfg.distill_mutual,
        head_identity_weight=loss_cfg.head_identity_weight,
    )
