"""An exponential moving average of a model's weights (``train.ema_decay``).

:class:`WeightAverage` keeps a copy of the model whose floating-point parameters and buffers
follow the training weights, ``avg = decay * avg + (1 - decay) * w`` after every optimiser
step (the first update copies ``w``), as ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn`` and ``use_buffers=True`` does. Integer buffers (MHGA's relation
codes, BatchNorm's step count) are copied, never averaged: arithmetic on them would truncate.
The copy is what the run retrieves with, validates and saves under ``AVERAGE_KEY`` in its
checkpoints (:func:`csetgraph.engine.training_state.retrieval_weights`).
"""

from __future__ import annotations

import copy
import itertools

import torch

from csetgraph.engine.training_state import AVERAGE_KEY, load_model_state
from csetgraph.errors import CheckpointError


class WeightAverage:
    """The moving average of ``model``'s weights (a frozen copy in eval mode, ``.module``)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"a weight average needs 0 < decay < 1, got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @staticmethod
    def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step: move the average towards ``model``'s current weights."""
        own, new = self._tensors(self.module), self._tensors(model)
        if self.updates == 0:
            torch._foreach_copy_(own, new)
        else:
            pairs = [(a, w) for a, w in zip(own, new, strict=True) if a.is_floating_point()]
            torch._foreach_lerp_([a for a, _ in pairs], [w for _, w in pairs], 1 - self.decay)
            for a, w in zip(own, new, strict=True):
                if not a.is_floating_point():
                    a.copy_(w)
        self.updates += 1

    def state_dict(self) -> dict:
        """The averaged model's state dict and the update count, for a checkpoint."""
        return {AVERAGE_KEY: self.module.state_dict(), f"{AVERAGE_KEY}_updates": self.updates}

    def load_state_dict(self, ckpt: dict, origin: str) -> None:
        """Restore from a checkpoint that :meth:`state_dict` went into."""
        if AVERAGE_KEY not in ckpt:
            raise CheckpointError(f"{origin} holds no weight average (train.ema_decay was 0)")
        load_model_state(self.module, ckpt[AVERAGE_KEY], origin)
        self.updates = int(ckpt[f"{AVERAGE_KEY}_updates"])


def build_weight_average(model: torch.nn.Module, decay: float) -> WeightAverage | None:
    """The run's weight average, or None when ``decay`` is 0 (off)."""
    return WeightAverage(model, decay) if decay else None
