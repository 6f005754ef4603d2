"""The one adapter from :class:`~csetgraph.config.ModelConfig` to model keyword arguments."""

from __future__ import annotations

from csetgraph.config import ModelConfig
from csetgraph.models.cset import CSET


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
    )


def build_model(
    model_cfg: ModelConfig, num_classes: int, img_size: tuple[int, int] = (256, 128)
) -> CSET:
    """Build CSET from its config section (``img_size`` is ``(data.height, data.width)``)."""
    return CSET(num_classes, **model_kwargs(model_cfg, img_size))
