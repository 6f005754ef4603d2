"""A modality-specific ViT encoder built with timm, stepped block by block.

CSET inserts the similarity exchange *between* transformer blocks and branches the MHGA after
block L-1, so the encoder exposes the token embedding, the blocks and the final norm instead
of only a fused forward.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from csetgraph.errors import ConfigError
from csetgraph.models.checkpoint import load_pretrained
from csetgraph.models.options import OptionError


class ViTEncoder(nn.Module):
    """A timm Vision Transformer used as a token encoder.

    Args:
        backbone: a timm ViT name, e.g. ``"vit_small_patch16_224"``.
        img_size: input ``(height, width)``; positional embeddings are made (or resampled) for
            this grid.
        embed_dim, depth, num_heads: override the backbone's width, depth and heads (``None``
            keeps the backbone's).
        patch_stride: stride of the patch projection; ``None`` is the patch size,
            a smaller value gives overlapping patches (as TransReID does).
        drop_path_rate: stochastic depth.
        pretrained: ``""`` (random init), a timm name (timm downloads the weights) or the path
            of a local checkpoint; see :func:`~csetgraph.models.checkpoint.load_pretrained`.

    Shapes:
        - :meth:`embed_tokens`: ``(B, 3, H, W) -> (B, N, C)`` with ``N = 1 + h * w``
        - :meth:`forward_features`: ``(B, 3, H, W) -> (B, N, C)``
    """

    def __init__(
        self,
        backbone: str = "vit_small_patch16_224",
        *,
        img_size: tuple[int, int] = (256, 128),
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        patch_stride: int | None = None,
        drop_path_rate: float = 0.0,
        pretrained: str = "",
    ) -> None:
        super().__init__()
        kwargs: dict = {"img_size": tuple(img_size), "num_classes": 0}
        if embed_dim is not None:
            kwargs["embed_dim"] = embed_dim
        if depth is not None:
            kwargs["depth"] = depth
        if num_heads is not None:
            kwargs["num_heads"] = num_heads
        try:
            vit = timm.create_model(
                backbone, pretrained=False, drop_path_rate=drop_path_rate, **kwargs
            )
        except RuntimeError as err:
            raise ConfigError(
                f"cannot build timm backbone {backbone!r} (model.backbone): {err}"
            ) from err
        except AssertionError as err:  # timm's own check: the heads must divide the width
            if num_heads is None:
                raise
            width = embed_dim if embed_dim is not None else f"{backbone}'s width"
            raise OptionError(
                "encoder.num_heads", f"={num_heads} does not divide {width}: pick a divisor"
            ) from err
        if not hasattr(vit, "blocks") or not hasattr(vit, "cls_token") or vit.cls_token is None:
            raise ConfigError(
                f"model.backbone={backbone!r} is not a ViT with a class token: pick a timm ViT "
                "such as vit_small_patch16_224"
            )
        if patch_stride is not None:
            _set_patch_stride(vit, patch_stride)
        self.vit = vit
        self.backbone = backbone
        #: How the pretrained weights matched (``None`` without ``pretrained``).
        self.pretrained_report = load_pretrained(vit, pretrained) if pretrained else None

    @property
    def blocks(self) -> nn.Sequential:
        return self.vit.blocks

    @property
    def norm(self) -> nn.Module:
        return self.vit.norm

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the patch grid."""
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def num_tokens(self) -> int:
        h, w = self.grid_size
        return 1 + h * w

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The input normalisation the backbone was pretrained with."""
        cfg = self.vit.pretrained_cfg or {}
        return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token and positional embedding: the input of block 0."""
        x = self.vit.patch_embed(x)  # (B, h*w, C)
        x = self.vit._pos_embed(x)  # (B, N, C)
        x = self.vit.patch_drop(x)
        return self.vit.norm_pre(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All blocks and the final norm: ``(B, 3, H, W) -> (B, N, C)``."""
        x = self.embed_tokens(x)
        x = self.vit.blocks(x)
        return self.vit.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class-token feature ``(B, C)``."""
        return self.forward_features(x)[:, 0]


def _set_patch_stride(vit: nn.Module, stride: int) -> None:
    """Make the patch projection overlap (stride < patch size) and resize the positional grid."""
    pe = vit.patch_embed
    patch = pe.patch_size[0]
    if not 0 < stride <= patch:
        raise ConfigError(f"model.patch_stride must be in [1, {patch}], got {stride}")
    if stride == patch:
        return
    H, W = pe.img_size
    grid = ((H - patch) // stride + 1, (W - patch) // stride + 1)
    old = pe.proj
    pe.proj = nn.Conv2d(old.in_channels, old.out_channels, patch, stride=stride)
    pe.grid_size = grid
    pe.num_patches = grid[0] * grid[1]
    if hasattr(pe, "strict_img_size"):
        pe.strict_img_size = False
    n = vit.num_prefix_tokens + pe.num_patches
    vit.pos_embed = nn.Parameter(torch.randn(1, n, vit.embed_dim) * 0.02)
