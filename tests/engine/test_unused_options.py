"""run_guard.unused_options: what a config never reads, checked by training with it changed."""

from __future__ import annotations

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine.run_guard import config_differences, unused_options
from csetgraph.losses import build_criterion
from csetgraph.models import build_model

#: Another valid value for every option unused_options may list.
CHANGED = [
    "model.se.layers=[1]",
    "model.se.alpha=0.3",
    "model.se.ratio=1.0",
    "model.se.temperature=2.0",
    "model.se.similarity=dot",
    "model.triplet.heads=replace",
    "model.triplet.head_dropout=0.5",
    "model.triplet.head_form=plain",
    "model.triplet.head_norm=batch",
    "model.triplet.head_identity=true",
    "model.ca.heads=4",
    "loss.distill_weight=0.3",
    "loss.distill_mutual=false",
    "loss.ca_identity_weight=0.0",
    "loss.head_identity_weight=1.0",
]


def one_step(cfg) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss and the gradients of one seeded training step on random images."""
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, (32, 16)).train()
    vis, ir = torch.randn(4, 3, 32, 16), torch.randn(4, 3, 32, 16)
    pids = torch.tensor([0, 0, 1, 2] * 2)
    loss, _ = build_criterion(cfg.loss)(model(vis, ir), pids)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    "row", [["model.se.direction=none", "model.ca.enabled=false"], ["model.ca.enabled=false"]]
)
def test_unused_options_change_nothing_the_model_computes(tiny_overrides, row):
    base = load_config(None, [*tiny_overrides, "model.mhga.enabled=false", *row])
    unused = unused_options(base)
    changed = [o for o in CHANGED if o.split("=")[0] in unused]
    assert len(changed) == len(unused) >= 4  # each listed option is changed here
    other = load_config(None, [*tiny_overrides, "model.mhga.enabled=false", *row, *changed])
    assert set(config_differences(base, other)) == set()
    loss, grads = one_step(base)
    loss2, grads2 = one_step(other)
    assert torch.equal(loss, loss2)
    assert len(grads) == len(grads2) and all(map(torch.equal, grads, grads2))


def test_an_option_in_use_on_either_side_is_a_difference(tiny_overrides):
    def cfg(*extra):
        return load_config(None, [*tiny_overrides, *extra])

    diff = config_differences(
        cfg("model.ca.enabled=false", "loss.distill_mutual=true"), cfg("loss.distill_mutual=false")
    )
    assert diff["loss.distill_mutual"] == [True, False]
    assert diff["model.ca.enabled"] == [False, True]
    assert config_differences(
        cfg("loss.distill_mutual=true"), cfg("loss.distill_mutual=false")
    ) == {"loss.distill_mutual": [True, False]}
