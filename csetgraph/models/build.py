"""The one adapter from :class:`~csetgraph.config.ModelConfig` to model keyword arguments."""

from __future__ import annotations

import re

import torch

from csetgraph.config import ModelConfig
from csetgraph.errors import ConfigError
from csetgraph.models.cset import CSET, check_exchange_size


def model_kwargs(model_cfg: ModelConfig, img_size: tuple[int, int]) -> dict:
    """Keyword arguments of :class:`CSET` for a model config and an input size."""
    return dict(
        backbone=model_cfg.backbone,
        img_size=tuple(img_size),
        embed_dim=model_cfg.embed_dim,
        depth=model_cfg.depth,
        num_heads=model_cfg.num_heads,
        patch_stride=model_cfg.patch_stride,
        drop_path_rate=model_cfg.drop_path_rate,
        pretrained=model_cfg.pretrained,
        dropout=model_cfg.dropout,
        share_encoders=model_cfg.share_encoders,
        se_direction=model_cfg.se.direction,
        se_layers=tuple(model_cfg.se.layers),
        se_alpha=model_cfg.se.alpha,
        se_ratio=model_cfg.se.ratio,
        se_temperature=model_cfg.se.temperature,
        ca_enabled=model_cfg.ca.enabled,
        ca_heads=model_cfg.ca.heads,
        mhga_enabled=model_cfg.mhga.enabled,
        mhga_heads=model_cfg.mhga.heads,
        mhga_strengths=tuple(model_cfg.mhga.strengths),
        mhga_learn_strengths=model_cfg.mhga.learn_strengths,
        mhga_adjacency=model_cfg.mhga.adjacency,
        mhga_graph=model_cfg.mhga.graph,
        mhga_layer=model_cfg.mhga.layer,
        mhga_pair_graph=model_cfg.mhga.pair_graph,
    )


def build_model(
    model_cfg: ModelConfig, num_classes: int, img_size: tuple[int, int] = (256, 128)
) -> CSET:
    """Build CSET from its config section (``img_size`` is ``(data.height, data.width)``).

    Raises:
        ConfigError: an input size the patch grid does not cover (:func:`check_input_size`),
            or an SE ratio that exchanges no token.
    """
    check_input_size(model_cfg, *img_size)
    return CSET(num_classes, **model_kwargs(model_cfg, img_size))


def patch_size(model_cfg: ModelConfig) -> int:
    """The patch size of ``model.backbone``: from its timm name (``..._patch16_...``), else
    read from the model built on the meta device (no memory, no weights)."""
    found = re.search(r"patch(\d+)", model_cfg.backbone)
    if found:
        return int(found.group(1))
    import timm

    try:
        with torch.device("meta"):
            vit = timm.create_model(model_cfg.backbone, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise ConfigError(
            f"model.backbone={model_cfg.backbone!r} is not a timm ViT: {err}"
        ) from err
    return int(vit.patch_embed.patch_size[0])


def check_input_size(model_cfg: ModelConfig, height: int, width: int) -> None:
    """Refuse an input size that the patch grid does not tile exactly.

    A ViT's patch projection is a convolution with kernel ``p`` (the patch size) and stride
    ``s`` (``model.patch_stride``, default ``p``); a side of length ``L`` is covered exactly
    when ``(L - p) % s == 0``. Any other size silently drops the last ``(L - p) % s`` rows or
    columns: with ``data.height=100`` and 16-pixel patches the bottom 4 rows never reach the
    model.

    The SE ratio is checked here too, since whether it exchanges anything depends on the
    patch count: this one call refuses, before anything is built or written, every config
    that :func:`build_model` would refuse for its input size.

    Raises:
        ConfigError: naming the side, its value and the nearest sizes that work; or an SE
            ratio with ``floor(ratio * patches) == 0`` (see
            :func:`~csetgraph.models.cset.check_exchange_size`).
    """
    p = patch_size(model_cfg)
    s = model_cfg.patch_stride or p
    for key, side in (("data.height", height), ("data.width", width)):
        if side >= p and (side - p) % s == 0:
            continue
        below = p + (side - p) // s * s if side >= p else None
        above = p if side < p else below + s
        near = f"{below} or {above}" if below is not None else f"at least {above}"
        dropped = f"the last {side - below} pixels are dropped" if below else "no patch fits"
        raise ConfigError(
            f"{key}={side} does not fit the patch grid (patch {p}, stride {s}): {dropped}. "
            f"Use {key}={near} (sizes p + k * s)"
        )
    if model_cfg.se.direction != "none":
        grid = ((height - p) // s + 1) * ((width - p) // s + 1)
        check_exchange_size(model_cfg.se.ratio, grid)
