"""Losses: identity, cross-modal triplet, cross-distillation (eq. 8-10)."""

from csetgraph.losses.build import build_criterion
from csetgraph.losses.distillation import CrossDistillationLoss, cross_distillation_loss
from csetgraph.losses.identity import IdentityLoss, identity_loss
from csetgraph.losses.total import CSETLoss, LossStats
from csetgraph.losses.triplet import (
    TripletStats,
    cross_modal_triplet_loss,
    squared_euclidean,
    triplet_statistics,
)

__all__ = [
    "CSETLoss",
    "CrossDistillationLoss",
    "IdentityLoss",
    "LossStats",
    "TripletStats",
    "build_criterion",
    "cross_distillation_loss",
    "cross_modal_triplet_loss",
    "identity_loss",
    "squared_euclidean",
    "triplet_statistics",
]
