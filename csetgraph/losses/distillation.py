"""Cross-distillation between the cross-attention output and the clean prediction.

The paper names the loss without defining it; we use a symmetric KL divergence between the
two identity distributions, each direction's target detached (stop-gradient), so that each
prediction is pulled towards the other without the target moving to meet it; or one-way,
the clean prediction teaching the other (``mutual=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cross_distillation_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    temperature: float = 1.0,
    mutual: bool = True,
) -> torch.Tensor:
    """``0.5 * (KL(sg(p_b) || p_a) + KL(sg(p_a) || p_b))`` averaged over the batch, or with
    ``mutual=False`` ``KL(sg(p_b) || p_a)`` alone (one-way: ``b`` teaches ``a`` and gets no
    gradient).

    Shapes:
        - logits_a, logits_b: ``(n, C)``
        - output: scalar
    """
    log_a = F.log_softmax(logits_a / temperature, dim=1)
    log_b = F.log_softmax(logits_b / temperature, dim=1)
    kl_ab = F.kl_div(log_a, log_b.detach(), reduction="batchmean", log_target=True)
    if not mutual:
        return kl_ab * temperature**2
    kl_ba = F.kl_div(log_b, log_a.detach(), reduction="batchmean", log_target=True)
    return 0.5 * (kl_ab + kl_ba) * temperature**2


class CrossDistillationLoss(nn.Module):
    """Module form of :func:`cross_distillation_loss`."""

    def __init__(self, temperature: float = 1.0, mutual: bool = True) -> None:
        super().__init__()
        self.temperature = temperature
        self.mutual = mutual

    def forward(self, logits_a, logits_b):
        return cross_distillation_loss(logits_a, logits_b, self.temperature, self.mutual)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, mutual={self.mutual}"
