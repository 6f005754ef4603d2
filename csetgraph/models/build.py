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
        mhga_pair_graph=model_cfg.mhga.pair_graph,
    )


def build_model(
    model_cfg: ModelConfig, num_classes: int, img_size: tuple[int, int] = (256, 128)
) -> CSET:
    """Build CSET from its config section (``img_size`` is ``(data.height, data.width)``)."""
    return CSET(num_classes, **model_kwargs(model_cfg, img_size))
