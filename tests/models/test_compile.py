"""The training forward and loss compile as one graph: no graph breaks (``train.compile``)."""

from pathlib import Path

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.losses import build_criterion
from csetgraph.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: The synthetic recipe, made smaller so that tracing is quick (the structure is unchanged).
SYNTHETIC = (
    None,
    [
        *("model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.se.layers=[0]"),
        *("model.ca.heads=2", "model.mhga.heads=2", "data.height=64", "data.width=32"),
        "model.se.ratio=0.25",
        "model.pretrained=",  # random init: the shipped weights are 128 wide
    ],
)
#: The SYSU-MM01 recipe (every switch, its heads, drop path, erasing) shrunk: no download.
SYSU = (
    CONFIGS / "sysu_mm01.yaml",
    [
        *("model.pretrained=", "model.embed_dim=48", "model.depth=3", "model.num_heads=6"),
        *("model.se.layers=[0,1]", "data.height=96", "data.width=48"),
    ],
)
CASES = {
    "synthetic-dense": (*SYNTHETIC, []),
    "synthetic-message_passing": (*SYNTHETIC, ["model.mhga.layer=message_passing"]),
    "synthetic-local": (*SYNTHETIC, ["model.mhga.graph=local"]),
    "sysu-dense": (*SYSU, []),
    "sysu-message_passing": (*SYSU, ["model.mhga.layer=message_passing"]),
}


def test_the_case_list_is_not_empty():
    assert len(CASES) == 5


@pytest.mark.slow  # about a minute for the five cases; it runs in the default suite and CI
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_loss_have_no_graph_break(case):
    path, shrink, extra = CASES[case]
    cfg = load_config(path, [*shrink, *extra])
    torch.manual_seed(0)
    size = (cfg.data.height, cfg.data.width)
    model = build_model(cfg.model, 4, size).train()
    criterion = build_criterion(cfg.loss)
    vis, ir = torch.randn(4, 3, *size), torch.randn(4, 3, *size)
    pids = torch.tensor([0, 0, 1, 1] * 2)

    def step(vis, ir, pids):
        return criterion(model(vis, ir), pids)[0]

    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(vis, ir, pids)
    reasons = [b.reason for b in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1
