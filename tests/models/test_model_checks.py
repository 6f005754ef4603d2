"""Configurations the model refuses, and the parameter groups it reports."""

import math

import pytest
import torch
from torch import nn

from csetgraph.config import ModelConfig, load_config
from csetgraph.errors import ConfigError
from csetgraph.models import (
    CSET,
    CAOptions,
    EncoderOptions,
    MHGAOptions,
    OptionError,
    SEOptions,
    build_model,
    check_input_size,
)

TINY = dict(backbone="vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.0)


def encoder(img_size) -> EncoderOptions:
    return EncoderOptions(img_size=img_size, **TINY)


def small_cfg(**overrides) -> ModelConfig:
    cfg = load_config(None, ["model.embed_dim=32", "model.depth=2", "model.num_heads=2"])
    cfg.model.pretrained = ""  # random init: the shipped synthetic weights are 128 wide
    for key, value in overrides.items():
        setattr(cfg.model, key, value)
    return cfg.model


# ---------------------------------------------------------------- an exchange of nothing


@pytest.mark.parametrize(("img_size", "ratio"), [((64, 32), 0.1), ((32, 16), 0.4)])
def test_an_exchange_of_no_token_is_refused_with_the_smallest_ratio_that_works(img_size, ratio):
    patches = (img_size[0] // 16) * (img_size[1] // 16)
    assert math.floor(ratio * patches) == 0
    with pytest.raises(OptionError) as err:
        CSET(5, encoder=encoder(img_size), se=SEOptions("both", (0,), ratio=ratio))
    message = str(err.value)
    smallest = float(message.split(">= ")[1].split()[0])
    assert f"se.ratio={ratio}" in message and f"{patches} patches" in message
    assert err.value.argument == "se.ratio"
    # The suggestion is the smallest 4-decimal ratio that exchanges one token.
    assert math.floor(smallest * patches) == 1 and math.floor((smallest - 1e-4) * patches) == 0
    # Through the config the same refusal names the config key.
    cfg = small_cfg()
    cfg.se.ratio = ratio
    with pytest.raises(ConfigError, match=rf"model\.se\.ratio={ratio} exchanges"):
        build_model(cfg, 5, img_size)
    model = CSET(5, encoder=encoder(img_size), se=SEOptions("both", (0,), ratio=smallest))
    _, _, info = model.se(*(torch.randn(2, 1 + patches, 32) for _ in range(2)))
    assert info["i2v"].edge_index.shape == (2, 2)  # one token per pair and direction


def test_check_input_size_refuses_the_empty_exchange_before_building():
    cfg = small_cfg()
    cfg.se.ratio = 0.1
    for (height, width), patches in (((32, 16), 2), ((64, 32), 8)):
        with pytest.raises(ConfigError, match=rf"floor\(0.1 x {patches} patches\) = 0"):
            check_input_size(cfg, height, width)
    check_input_size(cfg, 80, 32)  # 5 x 2 = 10 patches: one is exchanged
    cfg.se.direction = "none"
    check_input_size(cfg, 32, 16)


def test_no_exchange_without_se_is_fine():
    CSET(5, encoder=encoder((32, 16)), se=SEOptions("none", ratio=0.1))


# ---------------------------------------------------------------- input sizes


def covered_rows(side: int, patch: int, stride: int) -> int:
    """Rows the patch convolution reads, measured: which input rows change its output."""
    if side < patch:
        return 0  # not even one patch fits
    conv = nn.Conv2d(1, 1, patch, stride=stride, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, side, patch, requires_grad=True)
    conv(x).sum().backward()
    return int((x.grad[0, 0, :, 0] != 0).sum())


def nearest_valid(side: int, patch: int, stride: int) -> tuple[int, int]:
    valid = [L for L in range(patch, 4 * side) if covered_rows(L, patch, stride) == L]
    below = max([L for L in valid if L < side], default=None)
    above = min(L for L in valid if L > side)
    return below, above


@pytest.mark.parametrize(
    ("height", "width", "stride"), [(100, 64, None), (128, 70, None), (128, 64, 12), (8, 64, None)]
)
def test_input_sizes_the_patch_grid_does_not_tile_are_refused(height, width, stride):
    cfg = small_cfg(patch_stride=stride)
    s = stride or 16
    key, side = (
        ("data.height", height)
        if covered_rows(height, 16, s) != height
        else (
            "data.width",
            width,
        )
    )
    below, above = nearest_valid(side, 16, s)
    with pytest.raises(ConfigError, match=f"{key}={side} ") as err:
        check_input_size(cfg, height, width)
    want = f"{key}={below} or {above}" if below else f"{key}=at least {above}"
    assert want in str(err.value)
    with pytest.raises(ConfigError):
        build_model(cfg, 5, (height, width))


@pytest.mark.parametrize(("height", "width", "stride"), [(128, 64, None), (256, 124, 12)])
def test_tiled_input_sizes_pass(height, width, stride):
    assert covered_rows(height, 16, stride or 16) == height
    check_input_size(small_cfg(patch_stride=stride), height, width)


def test_the_old_silent_drop_is_what_the_check_prevents():
    """At height 100 the bottom 4 rows never reached the model: zeroing them changed nothing."""
    model = CSET(5, encoder=encoder((100, 64))).eval()  # the layer itself does not check
    x = torch.randn(2, 3, 100, 64)
    cut = x.clone()
    cut[:, :, 96:] = 0
    torch.testing.assert_close(model.embed(cut, "vis"), model.embed(x, "vis"))
    with pytest.raises(ConfigError, match=r"data\.height=96 or 112"):
        build_model(small_cfg(), 5, (100, 64))


# ---------------------------------------------------------------- weight decay groups


def test_no_weight_decay_lists_embeddings_norms_and_biases():
    model = CSET(
        5,
        encoder=encoder((64, 32)),
        se=SEOptions("both", (0,), ratio=0.25),
        ca=CAOptions(enabled=True, heads=2),
        mhga=MHGAOptions(enabled=True, heads=2, learn_strengths=True),
    )
    names = {id(p): n for n, p in model.named_parameters()}
    expected = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in names:
                continue
            norm = isinstance(module, nn.LayerNorm | nn.BatchNorm1d)
            if norm or pname in ("bias", "pos_embed", "cls_token", "strengths"):
                expected.add(names[id(p)])
            if pname == "in_proj_bias":  # nn.MultiheadAttention's bias of q, k, v
                expected.add(names[id(p)])
    skip = model.no_weight_decay()
    assert skip == expected
    assert {"vis_encoder.vit.pos_embed", "ir_encoder.vit.cls_token", "mhga.conv.bias"} <= skip
    assert "mhga.conv.lin.weight" not in skip and "neck.classifier.weight" not in skip


def test_heads_that_do_not_divide_the_backbones_own_width_are_one_config_error():
    """With model.embed_dim=null the width is the backbone's (vit_tiny: 192 = 3 x 64), which
    only timm knows; 5 heads used to end in timm's bare AssertionError."""
    cfg = load_config(None, ["model.embed_dim=null", "model.num_heads=5", "model.pretrained="])
    assert cfg.model.backbone == "vit_tiny_patch16_224"
    with pytest.raises(ConfigError, match=r"^model\.num_heads=5 does not divide vit_tiny"):
        build_model(cfg.model, num_classes=4, img_size=(cfg.data.height, cfg.data.width))
    ok = load_config(None, ["model.embed_dim=null", "model.num_heads=4", "model.pretrained="])
    model = build_model(ok.model, num_classes=4, img_size=(ok.data.height, ok.data.width))
    assert model.vis_encoder.vit.embed_dim % 4 == 0
