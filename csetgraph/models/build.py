"""The one adapter from :class:`~csetgraph.config.ModelConfig` to the model's option groups."""

from __future__ import annotations

import re

import torch

from csetgraph.config import ModelConfig
from csetgraph.errors import ConfigError
from csetgraph.graph import num_selected
from csetgraph.models.cset import CSET, smallest_ratio
from csetgraph.models.options import (
    CAOptions,
    EncoderOptions,
    MHGAOptions,
    OptionError,
    SEOptions,
    TripletOptions,
)

#: Config keys whose name differs from their model option's (``group.field``).
_OPTION_KEYS = {"encoder.shared": "model.share_encoders", "ca.dropout": "model.dropout"}


def config_key(argument: str) -> str:
    """The config key of a model option named ``group.field`` (``"se.ratio"``)."""
    if argument in _OPTION_KEYS:
        return _OPTION_KEYS[argument]
    group, _, name = argument.partition(".")
    return f"model.{name}" if group == "encoder" else f"model.{argument}"


def model_options(model_cfg: ModelConfig, img_size: tuple[int, int]) -> dict:
    """The option groups of :class:`CSET` (keyword arguments) for a config and an input size.

    Raises:
        ConfigError: an option group refuses a value; the message names the config key.
    """
    m = model_cfg
    try:
        return dict(
            encoder=EncoderOptions(
                backbone=m.backbone,
                img_size=tuple(img_size),
                embed_dim=m.embed_dim,
                depth=m.depth,
                num_heads=m.num_heads,
                patch_stride=m.patch_stride,
                drop_path_rate=m.drop_path_rate,
                pretrained=m.pretrained,
                shared=m.share_encoders,
            ),
            se=SEOptions(
                direction=m.se.direction,
                layers=tuple(m.se.layers),
                alpha=m.se.alpha,
                ratio=m.se.ratio,
                temperature=m.se.temperature,
                similarity=m.se.similarity,
            ),
            triplet=TripletOptions(
                feature=m.triplet.feature,
                heads=m.triplet.heads,
                head_dropout=m.triplet.head_dropout,
                head_form=m.triplet.head_form,
                head_norm=m.triplet.head_norm,
                head_identity=m.triplet.head_identity,
            ),
            ca=CAOptions(enabled=m.ca.enabled, heads=m.ca.heads, dropout=m.dropout),
            mhga=MHGAOptions(
                enabled=m.mhga.enabled,
                heads=m.mhga.heads,
                strengths=tuple(m.mhga.strengths),
                learn_strengths=m.mhga.learn_strengths,
                adjacency=m.mhga.adjacency,
                graph=m.mhga.graph,
                layer=m.mhga.layer,
                pair_graph=m.mhga.pair_graph,
            ),
        )
    except OptionError as err:
        raise ConfigError(str(err).replace(err.argument, config_key(err.argument), 1)) from err


def build_model(
    model_cfg: ModelConfig, num_classes: int, img_size: tuple[int, int] = (256, 128)
) -> CSET:
    """Build CSET from its config section (``img_size`` is ``(data.height, data.width)``).

    Raises:
        ConfigError: an input size the patch grid does not cover (:func:`check_input_size`),
            an SE ratio that exchanges no token, or any option the model refuses (named by
            its config key).
    """
    check_input_size(model_cfg, *img_size)
    options = model_options(model_cfg, img_size)
    try:
        return CSET(num_classes, **options)
    except OptionError as err:
        raise ConfigError(str(err).replace(err.argument, config_key(err.argument), 1)) from err


def check_exchange_size(ratio: float, num_patches: int) -> None:
    """Refuse an SE ratio that exchanges no token: ``floor(ratio * patches) == 0``.

    Raises:
        ConfigError: naming the ratio, the patch count and the smallest ratio that works.
    """
    if num_selected(num_patches, ratio) > 0:
        return
    raise ConfigError(
        f"model.se.ratio={ratio} exchanges floor({ratio} x {num_patches} patches) = 0 tokens, "
        f"so SE and CA would only duplicate compute; set model.se.ratio >= "
        f"{smallest_ratio(num_patches)} (or model.se.direction=none to switch SE off)"
    )


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
            :func:`check_exchange_size`).
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
