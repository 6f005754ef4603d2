"""CSET: two modality-specific ViT encoders, similarity exchange, cross attention and MHGA.

Paper section 3 and Figure 1, with the decisions the paper leaves open made as in DESIGN.md
section 2:

* **Clean and mixed streams.** The clean stream of each modality runs every block of its own
  encoder. At the first block index in ``se_layers`` the similarity exchange swaps the most
  correlated patch tokens of the pair and a *mixed* stream branches off; it continues through
  the remaining blocks (exchanging again after every further SE layer). Nothing before the
  first SE layer is computed twice, and at inference only the clean stream exists: a query
  has no partner image.
* **Heads.** ``W'`` (one per modality) maps class tokens to the triplet-loss space; with SE
  the mixed stream's class tokens join the triplet loss, which is what trains SE without CA.
  ``W`` maps final tokens for the cross attention: the query comes from the mixed stream, the
  keys and values from the clean stream of the same modality. The attended class token gets
  identity logits of its own, tied to the model's clean prediction by the cross-distillation
  loss (:mod:`csetgraph.losses.distillation`). Heads and CA are training-only.
* **MHGA.** The clean tokens after block ``L-1`` go through one extra block per modality
  (initialised as a copy of block ``L``, i.e. from the pretrained last block when weights are
  pretrained), a LayerNorm, then the multi-relational heterogeneous graph attention over the
  token graph, wrapped with a residual and a LayerNorm; its mean-pooled output is the graph
  feature. At inference the graph is the ``N`` tokens of the single image. In training it is
  the same by default; ``mhga_pair_graph=True`` uses the ``2N`` tokens of the aligned pair
  instead (DESIGN.md's reading), which lets each image see its partner -- a shortcut that
  inference does not have and that we measured to hurt retrieval.
* **Output.** The clean class token (after the encoder's final norm), concatenated with the
  graph feature when MHGA is on, goes through a BNNeck; the L2-normalised BatchNorm output is
  the retrieval embedding. The identity loss reads the classifier after the BatchNorm; the
  triplet loss reads ``W'`` outputs, or the pre-BatchNorm feature when there are no heads.

With every switch off this is exactly the baseline of Table 1.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from csetgraph.graph import complete_token_graph, relation_matrix
from csetgraph.models.encoder import ViTEncoder
from csetgraph.nn import DenseMHGAConv, MHGAConv, SimilarityExchange

MODALITY_CODES = {"vis": 0, "ir": 1}
SE_DIRECTIONS = ("none", "i2v", "v2i", "both")
MHGA_GRAPHS = ("complete", "local")


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


def feed_forward_head(dim: int, dropout: float) -> nn.Sequential:
    """The paper's feed-forward head: Linear, GELU, Dropout (width kept)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))


class MHGABranch(nn.Module):
    """Extra transformer block per modality, then MHGA over the token graph (residual + norm).

    Args:
        last_vis_block, last_ir_block: the encoders' last blocks, copied as initialisation.
        dim: token width; heads: attention heads (``dim`` must divide by it).
        grid_size: ``(h, w)`` patch grid; strengths, learn_strengths, adjacency: MHGA options.
        graph: ``"complete"`` (every token pair, dense layer) or ``"local"`` (only ``same`` and
            ``adjacent`` edges, sparse :class:`~csetgraph.nn.MHGAConv`).

    Shapes:
        - :meth:`forward`: tokens ``(B, N, C)`` of one or two modalities -> pooled ``(B, C)``
          per modality.
    """

    def __init__(
        self,
        last_vis_block: nn.Module,
        last_ir_block: nn.Module,
        dim: int,
        *,
        heads: int = 4,
        grid_size: tuple[int, int],
        strengths: Sequence[float] = (1.0, 0.7, 0.3),
        learn_strengths: bool = False,
        adjacency: str = "sequence",
        graph: str = "complete",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"mhga heads ({heads}) must divide the token width ({dim})")
        if graph not in MHGA_GRAPHS:
            raise ValueError(f"mhga graph must be one of {MHGA_GRAPHS}, got {graph!r}")
        self.vis_block = copy.deepcopy(last_vis_block)
        self.ir_block = copy.deepcopy(last_ir_block)
        self.vis_norm = nn.LayerNorm(dim)
        self.ir_norm = nn.LayerNorm(dim)
        self.grid_size = tuple(grid_size)
        self.adjacency = adjacency
        self.graph = graph
        conv_kwargs = dict(
            heads=heads, concat=True, strengths=tuple(strengths), learn_strengths=learn_strengths
        )
        if graph == "complete":
            self.conv = DenseMHGAConv(dim, dim // heads, **conv_kwargs)
        else:
            self.conv = MHGAConv(dim, dim // heads, **conv_kwargs)
        self.out_norm = nn.LayerNorm(dim)

    def block(self, modality: str) -> nn.Module:
        return self.vis_block if modality == "vis" else self.ir_block

    def _norm(self, modality: str) -> nn.Module:
        return self.vis_norm if modality == "vis" else self.ir_norm

    def _conv(self, x: torch.Tensor, paired: bool) -> torch.Tensor:
        h, w = self.grid_size
        B, n, C = x.shape
        if self.graph == "complete":
            rel = relation_matrix(h, w, adjacency=self.adjacency, paired=paired).to(x.device)
            return self.conv(x, rel)  # (B, n, C)
        edge_index, edge_type = complete_token_graph(h, w, adjacency=self.adjacency, paired=paired)
        keep = edge_type < 2  # 'local': same and adjacent edges only
        edge_index, edge_type = edge_index[:, keep].to(x.device), edge_type[keep].to(x.device)
        E = edge_index.size(1)
        offsets = (torch.arange(B, device=x.device) * n).repeat_interleave(E)  # (B*E,)
        batched = edge_index.repeat(1, B) + offsets  # (2, B*E)
        out = self.conv(x.reshape(B * n, C), batched, edge_type.repeat(B))  # (B*n, C)
        return out.view(B, n, C)  # (B, n, C)

    def forward(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pooled graph features per modality.

        ``tokens`` holds the block ``L-1`` outputs of ``"vis"`` and ``"ir"`` (aligned pairs:
        one graph of ``2N`` nodes per pair) or of a single modality (one graph of ``N`` nodes
        per image).
        """
        names = list(tokens)
        x = [self._norm(m)(self.block(m)(tokens[m])) for m in names]  # each (B, N, C)
        N = x[0].shape[1]
        nodes = torch.cat(x, dim=1)  # (B, len(names) * N, C): vis nodes, then ir nodes
        nodes = self.out_norm(nodes + self._conv(nodes, paired=len(names) == 2))
        return {m: nodes[:, i * N : (i + 1) * N].mean(dim=1) for i, m in enumerate(names)}


class CSET(nn.Module):
    """Cross-modality similarity exchange transformer.

    Args:
        num_classes: training identities.
        backbone, img_size, embed_dim, depth, num_heads, patch_stride, drop_path_rate,
            pretrained: passed to both :class:`~csetgraph.models.encoder.ViTEncoder` (non-shared
            parameters; the same initial weights whether pretrained or not).
        dropout: dropout of the feed-forward heads ``W``, ``W'``.
        share_encoders: one encoder for both modalities (a single-stream ablation, not CSET;
            also used to pretrain the synthetic backbone).
        se_direction: ``"none"``, ``"i2v"``, ``"v2i"`` or ``"both"`` (Table 1).
        se_layers: exchange after these blocks (0-based; ``k`` means between blocks ``k`` and
            ``k + 1``, so ``0 <= k <= depth - 2``).
        se_alpha, se_ratio, se_temperature: similarity exchange options (eq. 1-3).
        ca_enabled, ca_heads: cross attention with cross-distillation.
        mhga_enabled, mhga_heads, mhga_strengths, mhga_learn_strengths, mhga_adjacency,
            mhga_graph: the graph branch.
        mhga_pair_graph: in training, one graph over the ``2N`` tokens of each aligned pair
            (DESIGN.md's reading of the paper) instead of each image's own ``N``-token graph.
            Off by default: a pair graph lets every training image see its partner of the same
            identity, a shortcut that inference (one image, no partner) does not have; on the
            synthetic data it took Rank-1 from 6.7% (no MHGA) down to 1.4%.

    Shapes:
        - :meth:`forward` (training): ``vis, ir: (B, 3, H, W)`` aligned pairs -> dict.
        - :meth:`embed`: ``(B, 3, H, W) -> (B, D)``, L2-normalised, ``D`` = width (x2 with
          MHGA).
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
        share_encoders: bool = False,
        se_direction: str = "none",
        se_layers: Sequence[int] = (),
        se_alpha: float = 0.7,
        se_ratio: float = 0.1,
        se_temperature: float = 1.0,
        ca_enabled: bool = False,
        ca_heads: int = 4,
        mhga_enabled: bool = False,
        mhga_heads: int = 4,
        mhga_strengths: Sequence[float] = (1.0, 0.7, 0.3),
        mhga_learn_strengths: bool = False,
        mhga_adjacency: str = "sequence",
        mhga_graph: str = "complete",
        mhga_pair_graph: bool = False,
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
        self.share_encoders = share_encoders
        if share_encoders:
            self.ir_encoder = self.vis_encoder
        else:
            self.ir_encoder = ViTEncoder(backbone, **enc_kwargs)
            if not pretrained:
                # Both streams start from one initialisation, as they do from ImageNet weights.
                self.ir_encoder.load_state_dict(self.vis_encoder.state_dict())
        dim = self.vis_encoder.embed_dim
        depth_ = len(self.vis_encoder.blocks)
        self.dropout = dropout

        if se_direction not in SE_DIRECTIONS:
            raise ValueError(f"se_direction must be one of {SE_DIRECTIONS}, got {se_direction!r}")
        self.se_layers = tuple(sorted(set(se_layers))) if se_direction != "none" else ()
        if se_direction != "none" and not self.se_layers:
            raise ValueError("se_direction is set but se_layers is empty; list block indices")
        bad = [k for k in self.se_layers if not 0 <= k <= depth_ - 2]
        if bad:
            raise ValueError(
                f"se_layers {bad} out of range: with {depth_} blocks, exchange after blocks "
                f"0..{depth_ - 2}"
            )
        if (self.se_layers or ca_enabled) and share_encoders:
            raise ValueError("SE and CA need two encoders; set share_encoders=False")
        self.se = (
            SimilarityExchange(
                alpha=se_alpha, ratio=se_ratio, temperature=se_temperature, direction=se_direction
            )
            if self.se_layers
            else None
        )
        if ca_enabled and not self.se_layers:
            raise ValueError("cross attention needs the mixed stream: enable SE (se_direction)")
        # W' heads: triplet space, whenever there is a mixed stream or CA.
        self.tri_heads = (
            nn.ModuleDict({m: feed_forward_head(dim, dropout) for m in MODALITY_CODES})
            if self.se_layers
            else None
        )
        self.ca_enabled = ca_enabled
        if ca_enabled:
            self.ca_heads = nn.ModuleDict(
                {m: feed_forward_head(dim, dropout) for m in MODALITY_CODES}
            )
            self.cross_attention = nn.MultiheadAttention(dim, ca_heads, batch_first=True)
            self.ca_norm = nn.LayerNorm(dim)
            self.ca_neck = BNNeck(dim, num_classes)
        self.mhga = (
            MHGABranch(
                self.vis_encoder.blocks[-1],
                self.ir_encoder.blocks[-1],
                dim,
                heads=mhga_heads,
                grid_size=self.vis_encoder.grid_size,
                strengths=mhga_strengths,
                learn_strengths=mhga_learn_strengths,
                adjacency=mhga_adjacency,
                graph=mhga_graph,
            )
            if mhga_enabled
            else None
        )
        self.mhga_pair_graph = mhga_pair_graph
        self.feat_dim = dim * (2 if mhga_enabled else 1)
        self.neck = BNNeck(self.feat_dim, num_classes)

    # ------------------------------------------------------------------ helpers

    def encoder(self, modality: str) -> ViTEncoder:
        if modality == "vis":
            return self.vis_encoder
        if modality == "ir":
            return self.ir_encoder
        raise ValueError(f"modality must be 'vis' or 'ir', got {modality!r}")

    def _run_blocks(self, modality: str, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for blk in self.encoder(modality).blocks[start:stop]:
            x = blk(x)
        return x

    def _clean_features(
        self, tokens_final: dict[str, torch.Tensor], tokens_branch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Neck input per modality: final class token (+ pooled MHGA feature)."""
        cls = {m: self.encoder(m).norm(t)[:, 0] for m, t in tokens_final.items()}  # (B, C)
        if self.mhga is None:
            return cls
        if self.mhga_pair_graph:  # one graph of 2N nodes per aligned pair
            graph = self.mhga(tokens_branch)
        else:  # each image's own graph of N nodes, in training as at inference
            graph = {m: self.mhga({m: t})[m] for m, t in tokens_branch.items()}
        return {m: torch.cat([cls[m], graph[m]], dim=1) for m in cls}  # (B, 2C)

    # ------------------------------------------------------------------ training

    def forward(
        self, vis: torch.Tensor, ir: torch.Tensor, *, return_streams: bool = False
    ) -> dict[str, torch.Tensor]:
        """Training forward of ``B`` aligned pairs (visible ``b`` and infrared ``b`` share a pid).

        Returns a dict with rows ordered visible then infrared:

        - ``feat`` ``(2B, D)``: neck input (clean stream); ``logits`` ``(2B, classes)``;
        - ``tri_feat`` ``(2B or 4B, D')``, ``tri_modality``, ``tri_pids_index``: triplet inputs
          (clean, then mixed rows with SE); ``tri_pids_index`` maps rows to ``logits`` rows;
        - with CA: ``cd_logits`` (attended mixed query) and ``cd_target_logits`` (clean);
        - with ``return_streams``: ``streams`` = per block index, the clean and mixed tokens.
        """
        if vis.shape[0] != ir.shape[0]:
            raise ValueError("vis and ir must hold the same number of aligned images")
        B = vis.shape[0]
        depth = len(self.vis_encoder.blocks)
        names = ("vis", "ir")
        images = {"vis": vis, "ir": ir}
        clean = {m: self.encoder(m).embed_tokens(images[m]) for m in names}  # (B, N, C)
        mixed: dict[str, torch.Tensor] | None = None
        branch: dict[str, torch.Tensor] = {}
        streams: dict[int, dict] = {}
        se_info: list = []
        for k in range(depth):
            for m in names:
                if mixed is None:
                    clean[m] = self._run_blocks(m, clean[m], k, k + 1)
                else:  # clean and mixed through the same block in one call
                    both = self._run_blocks(m, torch.cat([clean[m], mixed[m]]), k, k + 1)
                    clean[m], mixed[m] = both[:B], both[B:]  # (B, N, C) each
            if k == depth - 2:
                branch = dict(clean)  # F^{L-1}: the input of the MHGA branch
            if k in self.se_layers:
                source = clean if mixed is None else mixed
                mixed_vis, mixed_ir, info = self.se(source["vis"], source["ir"])
                mixed = {"vis": mixed_vis, "ir": mixed_ir}
                se_info.append(info)
            if return_streams:
                streams[k] = {
                    "clean": {m: t for m, t in clean.items()},
                    "mixed": None if mixed is None else dict(mixed),
                }
        if depth == 1:
            branch = {m: self.encoder(m).embed_tokens(images[m]) for m in names}
        feats = self._clean_features(clean, branch)
        feat = torch.cat([feats["vis"], feats["ir"]])  # (2B, D)
        _, logits = self.neck(feat)
        modality = torch.arange(2, device=vis.device).repeat_interleave(B)  # (2B,) 0 vis, 1 ir
        out = {"feat": feat, "logits": logits, "se_info": se_info}
        if self.tri_heads is None:
            out.update(tri_feat=feat, tri_modality=modality)
        else:
            rows = [self.tri_heads[m](self.encoder(m).norm(clean[m])[:, 0]) for m in names]
            rows += [self.tri_heads[m](self.encoder(m).norm(mixed[m])[:, 0]) for m in names]
            out["tri_feat"] = torch.cat(rows)  # (4B, C): clean vis, clean ir, mixed vis, mixed ir
            out["tri_modality"] = modality.repeat(2)
            out["tri_pids_index"] = torch.arange(2 * B, device=vis.device).repeat(2)
        if self.ca_enabled:
            attended = []
            for m in names:
                q = self.ca_heads[m](self.encoder(m).norm(mixed[m]))  # (B, N, C)
                kv = self.ca_heads[m](self.encoder(m).norm(clean[m]))  # (B, N, C)
                a, _ = self.cross_attention(q, kv, kv, need_weights=False)
                attended.append(self.ca_norm(q + a)[:, 0])  # (B, C)
            _, out["cd_logits"] = self.ca_neck(torch.cat(attended))
            out["cd_target_logits"] = logits
        if return_streams:
            out["streams"] = streams
        return out

    # ------------------------------------------------------------------ inference

    def forward_features(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        """Neck input of single images through the clean stream: ``(B, D)``."""
        enc = self.encoder(modality)
        x = enc.embed_tokens(images)  # (B, N, C)
        depth = len(enc.blocks)
        branch = x
        for k, blk in enumerate(enc.blocks):
            x = blk(x)
            if k == depth - 2:
                branch = x
        return self._clean_features({modality: x}, {modality: branch})[modality]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        """Retrieval embedding of single images of one modality (clean stream only)."""
        bn_feat, _ = self.neck(self.forward_features(images, modality))
        return F.normalize(bn_feat, dim=1)
