"""Identity (cross-entropy) loss, eq. 8, with optional label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def identity_loss(
    logits: torch.Tensor, pids: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of identity logits ``(n, C)`` against relabelled pids ``(n,)``."""
    return F.cross_entropy(logits, pids, label_smoothing=label_smoothing)


class IdentityLoss(nn.Module):
    """Module form of :func:`identity_loss`."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits, pids):
        return identity_loss(logits, pids, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
