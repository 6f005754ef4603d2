"""The CSET model: two modality-specific ViT encoders, BNNeck and identity classifier.

With every switch off (``se_direction="none"``, ``ca_enabled=False``, ``mhga_enabled=False``)
this is the paper's baseline: the class token of each modality's encoder, a BNNeck (the
triplet loss on the feature before the BatchNorm, the identity loss on the classifier after
it), and the L2-normalised BatchNorm output as the retrieval embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from csetgraph.models.encoder import ViTEncoder

MODALITY_CODES = {"vis": 0, "ir": 1}


class BNNeck(nn.Module):
    """BatchNorm (bias frozen at zero) followed by a bias-free linear classifier.

    Shapes:
        - input: ``(n, C)``
        - output: ``(bn_feature (n, C), logits (n, num_classes))``
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_channels)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_channels, num_classes, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.bn(x)
        return feat, self.classifier(feat)


class CSET(nn.Module):
    """Cross-modality similarity exchange transformer (baseline when every switch is off).

    Args:
        num_classes: training identities.
        backbone, img_size, embed_dim, depth, num_heads, patch_stride, drop_path_rate,
            pretrained: passed to both :class:`~csetgraph.models.encoder.ViTEncoder`\\ s
            (non-shared parameters, the same initial weights when ``pretrained`` is set).
        dropout: dropout of the feed-forward heads.

    Shapes:
        - :meth:`forward` (training): ``vis, ir: (B, 3, H, W)`` aligned pairs ->
          a dict of outputs for the losses (see :meth:`forward`).
        - :meth:`embed`: ``(B, 3, H, W) -> (B, D)``, L2-normalised.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "vit_small_patch16_224",
        img_size: tuple[int, int] = (256, 128),
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        patch_stride: int | None = None,
        drop_path_rate: float = 0.1,
        pretrained: str = "",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        enc_kwargs = dict(
            img_size=tuple(img_size),
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            patch_stride=patch_stride,
            drop_path_rate=drop_path_rate,
            pretrained=pretrained,
        )
        self.vis_encoder = ViTEncoder(backbone, **enc_kwargs)
        self.ir_encoder = ViTEncoder(backbone, **enc_kwargs)
        if not pretrained:
            # Both streams start from one initialisation, as they do from ImageNet weights.
            self.ir_encoder.load_state_dict(self.vis_encoder.state_dict())
        dim = self.vis_encoder.embed_dim
        self.dropout = dropout
        self.feat_dim = dim
        self.neck = BNNeck(self.feat_dim, num_classes)

    def encoder(self, modality: str) -> ViTEncoder:
        if modality == "vis":
            return self.vis_encoder
        if modality == "ir":
            return self.ir_encoder
        raise ValueError(f"modality must be 'vis' or 'ir', got {modality!r}")

    def _features(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        tokens = self.encoder(modality).forward_features(images)  # (B, N, C)
        return tokens[:, 0]  # (B, C)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward of ``B`` aligned pairs.

        Returns:
            ``feat`` ``(2B, D)`` pre-BatchNorm features (triplet loss), ``logits``
            ``(2B, num_classes)``, ``modality`` ``(2B,)`` codes (0 vis, 1 ir); rows are the
            visible images then the infrared images.
        """
        feat = torch.cat([self._features(vis, "vis"), self._features(ir, "ir")])  # (2B, D)
        _, logits = self.neck(feat)
        B = vis.shape[0]
        modality = torch.cat(
            [feat.new_zeros(B, dtype=torch.long), feat.new_ones(B, dtype=torch.long)]
        )
        return {"feat": feat, "tri_feat": feat, "tri_modality": modality, "logits": logits}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        """Retrieval embedding of single images of one modality (the clean stream only)."""
        bn_feat, _ = self.neck(self._features(images, modality))
        return F.normalize(bn_feat, dim=1)
