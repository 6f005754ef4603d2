"""A model written by save_shipped_model comes back with its config and (float16) weights."""

import torch

from csetgraph.config import load_config
from csetgraph.models import build_model
from csetgraph.models.shipped import load_shipped_model, save_shipped_model


def test_round_trip_keeps_config_and_weights(tmp_path, tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, 4, (cfg.data.height, cfg.data.width)).eval()
    path = save_shipped_model(model, cfg, tmp_path / "m.safetensors", command="made here")
    loaded, got = load_shipped_model(path)
    assert got.model == cfg.model and got.data == cfg.data
    for key, value in model.state_dict().items():
        want = value.half().float() if value.is_floating_point() else value
        torch.testing.assert_close(loaded.state_dict()[key], want, rtol=0, atol=0)
    x = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    torch.testing.assert_close(loaded.embed(x, "vis"), model.embed(x, "vis"), atol=5e-3, rtol=0)
