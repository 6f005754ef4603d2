"""The shipped synthetic backbone: its bytes, and that it loads fully into both encoders."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from timm.layers import resample_abs_pos_embed

from csetgraph.config import load_config
from csetgraph.models import build_model

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "synthetic_vit_tiny.safetensors"


def _file_tensors() -> dict[str, torch.Tensor]:
    with safe_open(str(WEIGHTS), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_sha256_matches_the_recorded_one():
    recorded = re.findall(r"sha256 `([0-9a-f]{64})`", (ROOT / "weights" / "README.md").read_text())
    assert len(recorded) == 1, "weights/README.md must record exactly one sha256"
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == recorded[0]
    assert WEIGHTS.stat().st_size <= 10 * 2**20


def test_the_synthetic_recipe_and_the_default_use_the_shipped_weights():
    cfg = load_config(ROOT / "configs" / "synthetic.yaml")
    assert (ROOT / cfg.model.pretrained).resolve() == WEIGHTS.resolve()
    assert load_config(None).model.pretrained == cfg.model.pretrained


def _encoders(monkeypatch, *overrides):
    monkeypatch.chdir(ROOT)  # the recipe names the weights relative to the project folder
    cfg = load_config(ROOT / "configs" / "synthetic.yaml", list(overrides))
    model = build_model(cfg.model, 10, (cfg.data.height, cfg.data.width))
    assert model.vis_encoder is not model.ir_encoder
    return model.vis_encoder, model.ir_encoder


def test_both_encoders_load_every_tensor(monkeypatch):
    ref = _file_tensors()
    for enc in _encoders(monkeypatch):
        report = enc.pretrained_report
        assert report.missing == () and report.unexpected == ()
        assert report.matched == report.total == len(ref) == len(enc.vit.state_dict())
        state = enc.vit.state_dict()
        assert any(k.startswith("blocks.3.") for k in state)
        for key, value in ref.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_other_input_sizes_resample_the_positions(monkeypatch):
    ref = _file_tensors()
    vis, _ = _encoders(monkeypatch, "data.height=256", "data.width=128")
    assert vis.grid_size == (16, 8) and vis.pretrained_report.missing == ()
    expected = resample_abs_pos_embed(ref["pos_embed"], [16, 8], [8, 4], num_prefix_tokens=1)
    torch.testing.assert_close(vis.vit.pos_embed.detach(), expected)
    torch.testing.assert_close(
        vis.vit.blocks[0].attn.qkv.weight.detach(), ref["blocks.0.attn.qkv.weight"]
    )


@pytest.mark.parametrize("key", ["command", "objective"])
def test_the_file_records_how_it_was_made(key):
    with safe_open(str(WEIGHTS), framework="pt") as f:
        meta = json.loads(f.metadata()["csetgraph"])
    assert meta[key] and meta[key] in (ROOT / "weights" / "README.md").read_text()


CSET_WEIGHTS = ROOT / "weights" / "synthetic_cset.safetensors"


def test_the_trained_cset_file_is_the_recorded_one_and_small():
    recorded = re.findall(r"`sha256:([0-9a-f]{64})`", (ROOT / "weights" / "README.md").read_text())
    assert len(recorded) == 1, "weights/README.md records the trained CSET's sha256 once"
    assert hashlib.sha256(CSET_WEIGHTS.read_bytes()).hexdigest() == recorded[0]
    assert CSET_WEIGHTS.stat().st_size <= 10 * 2**20


def test_the_trained_cset_is_the_default_recipe_and_embeds():
    from csetgraph.config import config_to_dict
    from csetgraph.models.shipped import load_shipped_model

    model, cfg = load_shipped_model(CSET_WEIGHTS)
    recipe = config_to_dict(load_config(ROOT / "configs" / "synthetic.yaml"))
    assert config_to_dict(cfg)["model"] | {"pretrained": ""} == recipe["model"] | {"pretrained": ""}
    with safe_open(str(CSET_WEIGHTS), framework="pt") as f:
        meta = f.metadata()
        halves = [f.get_tensor(k) for k in f.keys()]
    assert meta["command"] in (ROOT / "weights" / "README.md").read_text()
    # float16 in the file, float32 in the model, the same values
    state = model.state_dict()
    assert all(t.dtype in (torch.float16, torch.int64) for t in halves)
    assert all(v.dtype != torch.float16 for v in state.values())
    x = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    emb = model.embed(x, "ir")
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
