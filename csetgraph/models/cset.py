"""CSET: two modality-specific ViT encoders, similarity exchange, cross attention and MHGA.

Paper section 3 and Figure 1. The decisions the paper leaves open, and the readings that keep
each mechanism alive where the literal one is degenerate, are in docs/model.md; in short:

* **Clean and mixed streams.** The clean stream of each modality runs every block of its own
  encoder. At the first block index in ``se.layers`` the similarity exchange swaps the most
  correlated patch tokens of the pair and a *mixed* stream branches off; it continues through
  the remaining blocks (exchanging again after every further SE layer). Nothing before the
  first SE layer is computed twice, and at inference only the clean stream exists: a query
  has no partner image.
* **Heads.** ``W'`` (one per modality) maps the class tokens of the clean and mixed streams
  to a triplet space, which is what trains SE without CA; by ``triplet.heads`` those rows
  replace the image rows of eq. 9 (the paper's text) or join them. ``W`` maps final tokens
  for the cross attention: the query comes from the mixed stream, the keys and values from
  the clean stream of the same modality. The attended class token gets identity logits of
  its own (``ca_logits``), tied to the clean prediction by the cross-distillation loss
  (:mod:`csetgraph.losses.distillation`) and, if the loss is so configured, trained by an
  identity loss of their own. Heads and CA are training-only.
* **MHGA.** The clean tokens after block ``L-1`` go through one extra block per modality
  (initialised as a copy of block ``L``, i.e. from the pretrained last block when weights are
  pretrained), a LayerNorm, then the multi-relational heterogeneous graph attention over the
  token graph, wrapped with a residual and a LayerNorm; its mean-pooled output is the graph
  feature. At inference the graph is the ``N`` tokens of the single image. In training it is
  the same by default; ``mhga.pair_graph=True`` uses the ``2N`` tokens of the aligned pair
  instead, which lets each image see its partner -- a shortcut that inference does not have
  and that we measured to hurt retrieval.
* **Output.** The clean class token (after the encoder's final norm), concatenated with the
  graph feature when MHGA is on, goes through a BNNeck; the L2-normalised BatchNorm output is
  the retrieval embedding. The identity loss reads the classifier after the BatchNorm; the
  image rows of the triplet loss are the neck input or the BatchNorm output
  (``triplet.feature``).
* **Calls.** timm's and torchreid's names: ``forward_features`` gives tokens, ``forward_head``
  the embedding, ``model(images, modality=...)`` both in turn (inference), and
  ``model(vis, ir)`` the training forward, a :class:`CSETOutput` that
  :class:`~csetgraph.losses.CSETLoss` reads by field name.

With every switch off this is exactly the baseline of Table 1.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from csetgraph.data.records import MODALITIES
from csetgraph.graph import (
    batch_token_graphs,
    complete_token_graph,
    local_token_graph,
    num_selected,
    relation_matrix,
)
from csetgraph.models.encoder import ViTEncoder
from csetgraph.models.health import (
    ModelHealth,
    class_token_cosine,
    local_edges,
    logit_entropy,
    relation_codes,
    relation_mass,
    uniform_mass,
)
from csetgraph.models.options import (
    MHGA_GRAPHS,
    MHGA_LAYERS,
    CAOptions,
    EncoderOptions,
    MHGAOptions,
    OptionError,
    SEOptions,
    TripletOptions,
)
from csetgraph.nn import DenseMHGAConv, MHGAConv, SimilarityExchange
from csetgraph.nn.mhga import PAPER_STRENGTHS


@dataclass
class CSETOutput:
    """What the training forward of :class:`CSET` returns; :class:`~csetgraph.losses.CSETLoss`
    reads these fields by name. Rows are ordered visible then infrared (``B`` pairs).

    Attributes:
        feat: ``(2B, D)`` neck input of the clean stream (class token, + MHGA feature).
        logits: ``(2B, classes)`` identity logits of ``feat``.
        retrieval_feat: ``(2B, D)`` the neck's BatchNorm output of ``feat``: the retrieval
            embedding before its L2 normalisation.
        modality: ``(2B,)`` modality code of each ``feat`` row (index into
            :data:`~csetgraph.data.records.MODALITIES`: 0 vis, 1 ir).
        triplet_feat: ``(2B, D)`` the image rows eq. 9 reads (``feat`` or ``retrieval_feat``,
            by ``triplet.feature``; row ``i`` has pid ``pids[i]``), or ``None`` when the
            ``W'`` rows replace them (``triplet.heads="replace"`` with SE).
        head_feat: with SE, ``(4B, C)`` clean vis, clean ir, mixed vis and mixed ir class
            tokens through ``W'``; else ``None``.
        head_modality: ``(4B,)`` modality code of each ``head_feat`` row, or ``None``.
        head_rows: ``(4B,)`` the ``feat`` row (image, hence pid) of each ``head_feat`` row.
        head_logits: with ``triplet.head_identity``, ``(4B, classes)`` identity logits of the
            ``head_feat`` rows, else ``None``.
        ca_logits: with CA, ``(2B, classes)`` logits of the attended mixed query, else ``None``
            (distilled towards ``logits``).
        se_info: one ``{"i2v": ExchangeEdges | None, "v2i": ...}`` per SE layer, in order.
        streams: with ``return_streams=True``, per block index ``{"clean": {m: (B, N, C)},
            "mixed": {m: (B, N, C)} | None}``; else ``None``.
        health: the mechanism statistics of this forward
            (:class:`~csetgraph.models.health.ModelHealth`, detached device tensors).
    """

    feat: torch.Tensor
    logits: torch.Tensor
    retrieval_feat: torch.Tensor
    modality: torch.Tensor
    triplet_feat: torch.Tensor | None = None
    head_feat: torch.Tensor | None = None
    head_modality: torch.Tensor | None = None
    head_rows: torch.Tensor | None = None
    head_logits: torch.Tensor | None = None
    ca_logits: torch.Tensor | None = None
    se_info: list = field(default_factory=list)
    streams: dict | None = None
    health: ModelHealth | None = None


@dataclass
class _StreamState:
    """Tokens after the last block: clean and mixed streams, and the MHGA branch input."""

    clean: dict[str, torch.Tensor]
    mixed: dict[str, torch.Tensor] | None
    branch: dict[str, torch.Tensor]
    se_info: list
    streams: dict | None
    mhga_attention: list = field(default_factory=list)  # (B, H, n, n) per MHGA call


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


class ResidualHead(nn.Module):
    r"""A head beside its input: :math:`y = x + h(x)`.

    The ``residual`` reading of the ``W'`` heads (``triplet.head_form``): the class token stays
    in the triplet space, so eq. 9 starts from the space that cross-entropy shapes instead of
    a random projection (docs/model.md, "The W' heads").

    Shapes:
        ``(..., C) -> (..., C)``
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.head(x)


def triplet_head(dim: int, triplet: TripletOptions) -> nn.Module:
    """One ``W'`` head: the feed-forward head, plain, beside its input or absent
    (``head_form``), standardised by a BatchNorm without affine parameters with
    ``head_norm="batch"``."""
    if triplet.head_form == "identity":
        head: nn.Module = nn.Identity()
    else:
        head = feed_forward_head(dim, triplet.head_dropout)
        if triplet.head_form == "residual":
            head = ResidualHead(head)
    if triplet.head_norm == "batch":
        head = nn.Sequential(head, nn.BatchNorm1d(dim, affine=False))
    return head


def smallest_ratio(num_patches: int) -> float:
    """The smallest SE ratio (4 decimals) that exchanges one of ``num_patches`` tokens."""
    return math.ceil(1e4 / num_patches) / 1e4


class MHGABranch(nn.Module):
    r"""Extra transformer block per modality, then MHGA over the token graph (residual + norm).

    For the tokens :math:`F^{L-1}` of one image (or an aligned pair) the branch computes

    .. math::
        X = \mathrm{LN}_m(\mathrm{Block}_m(F^{L-1})), \qquad
        Y = \mathrm{LN}(X + \mathrm{MHGA}(X, \mathcal{G})), \qquad
        g = \tfrac{1}{N} \textstyle\sum_i Y_i

    with :math:`\mathcal{G}` the token graph of :mod:`csetgraph.graph`. The graph's structure
    is constant, so it is built once and kept as non-persistent buffers: it moves with
    ``.to(device)`` and is never copied to the device in a forward pass.

    Args:
        last_vis_block, last_ir_block: the encoders' last blocks, copied as initialisation.
        dim: token width; heads: attention heads (``dim`` must divide by it).
        grid_size: ``(h, w)`` patch grid; strengths, learn_strengths, adjacency: MHGA options.
        graph: ``"complete"`` (every token pair) or ``"local"`` (only ``same`` and
            ``adjacent`` edges, always the sparse :class:`~csetgraph.nn.MHGAConv`).
        layer: for the complete graph, ``"dense"`` (:class:`~csetgraph.nn.DenseMHGAConv` on
            the relation matrix) or ``"message_passing"`` (:class:`~csetgraph.nn.MHGAConv` on
            the batched PyG edge list). Both have the same parameters and give the same numbers.

    Shapes:
        - :meth:`forward`: tokens ``(B, N, C)`` of one or two modalities -> pooled ``(B, C)``
          per modality; with ``return_attention_weights=True`` also the attention
          ``(B, H, n, n)`` (``[target, source]``, zero where there is no edge) over the
          ``n = N`` (one modality) or ``2N`` (pair) nodes.
    """

    def __init__(
        self,
        last_vis_block: nn.Module,
        last_ir_block: nn.Module,
        dim: int,
        *,
        heads: int = 4,
        grid_size: tuple[int, int],
        strengths: Sequence[float] = PAPER_STRENGTHS,
        learn_strengths: bool = False,
        adjacency: str = "sequence",
        graph: str = "complete",
        layer: str = "dense",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise OptionError("mhga.heads", f"={heads} must divide the token width {dim}")
        if graph not in MHGA_GRAPHS:
            raise OptionError("mhga.graph", f"must be one of {MHGA_GRAPHS}, got {graph!r}")
        if layer not in MHGA_LAYERS:
            raise OptionError("mhga.layer", f"must be one of {MHGA_LAYERS}, got {layer!r}")
        self.vis_block = copy.deepcopy(last_vis_block)
        self.ir_block = copy.deepcopy(last_ir_block)
        self.vis_norm = nn.LayerNorm(dim)
        self.ir_norm = nn.LayerNorm(dim)
        self.grid_size = tuple(grid_size)
        self.adjacency = adjacency
        self.graph = graph
        self.layer = layer if graph == "complete" else "message_passing"  # local is sparse
        conv_kwargs = dict(
            heads=heads, concat=True, strengths=tuple(strengths), learn_strengths=learn_strengths
        )
        conv_cls = DenseMHGAConv if self.layer == "dense" else MHGAConv
        self.conv = conv_cls(dim, dim // heads, **conv_kwargs)
        self.out_norm = nn.LayerNorm(dim)
        self._register_graphs()

    def _register_graphs(self) -> None:
        """The single-image and pair graphs as buffers (non-persistent: not in state dicts)."""
        h, w = self.grid_size
        graphs: dict[str, torch.Tensor] = {}
        for paired, name in ((False, "single"), (True, "pair")):
            if self.layer == "dense":
                graphs[f"relation_{name}"] = relation_matrix(
                    h, w, adjacency=self.adjacency, paired=paired
                )
                continue
            build = complete_token_graph if self.graph == "complete" else local_token_graph
            edge_index, edge_type = build(h, w, adjacency=self.adjacency, paired=paired)
            graphs.update({f"edge_index_{name}": edge_index, f"edge_type_{name}": edge_type})
        for name, value in graphs.items():
            self.register_buffer(name, value, persistent=False)
        #: Names of the constant graph buffers.
        self.graph_buffers = tuple(graphs)

    def block(self, modality: str) -> nn.Module:
        """The extra transformer block of ``modality`` (``"vis"`` or ``"ir"``)."""
        return {"vis": self.vis_block, "ir": self.ir_block}[_check_modality(modality)]

    def norm(self, modality: str) -> nn.Module:
        """The LayerNorm after the extra block of ``modality`` (``"vis"`` or ``"ir"``)."""
        return {"vis": self.vis_norm, "ir": self.ir_norm}[_check_modality(modality)]

    def _conv(
        self, x: torch.Tensor, paired: bool, return_attention_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, n, C = x.shape
        if self.layer == "dense":
            rel = self.relation_pair if paired else self.relation_single  # (n, n)
            return self.conv(x, rel, return_attention_weights=return_attention_weights)
        edge_index = self.edge_index_pair if paired else self.edge_index_single  # (2, E)
        edge_type = self.edge_type_pair if paired else self.edge_type_single  # (E,)
        batched, types = batch_token_graphs(edge_index, edge_type, n, B)  # (2, B*E), (B*E,)
        out = self.conv(x.reshape(B * n, C), batched, types, return_attention_weights)
        if not return_attention_weights:
            return out.view(B, n, C)  # (B, n, C)
        out, (_, alpha) = out  # alpha (B*E, H)
        return out.view(B, n, C), _dense_attention(alpha, edge_index, B, n)

    def forward(
        self, tokens: dict[str, torch.Tensor], *, return_attention_weights: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pooled graph features per modality (and the attention, as PyG layers return it).

        ``tokens`` holds the block ``L-1`` outputs of ``"vis"`` and ``"ir"`` (aligned pairs:
        one graph of ``2N`` nodes per pair, visible nodes first) or of a single modality (one
        graph of ``N`` nodes per image, node 0 the class token).
        """
        names = list(tokens)
        x = [self.norm(m)(self.block(m)(tokens[m])) for m in names]  # each (B, N, C)
        N = x[0].shape[1]
        nodes = torch.cat(x, dim=1)  # (B, len(names) * N, C): vis nodes, then ir nodes
        conv = self._conv(nodes, len(names) == 2, return_attention_weights)
        if return_attention_weights:
            conv, alpha = conv
        nodes = self.out_norm(nodes + conv)
        pooled = {m: nodes[:, i * N : (i + 1) * N].mean(dim=1) for i, m in enumerate(names)}
        return (pooled, alpha) if return_attention_weights else pooled


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def _dense_attention(alpha: torch.Tensor, edge_index: torch.Tensor, B: int, n: int):
    """Scatter the per-edge attention of ``B`` batched copies of one graph to ``(B, H, n, n)``.

    ``alpha`` rows follow :func:`~csetgraph.graph.batch_token_graphs` (graph-major), so graph
    ``b``'s edges are rows ``b * E ... (b + 1) * E - 1`` in ``edge_index``'s order.
    """
    E, H = edge_index.size(1), alpha.size(-1)
    flat = edge_index[1] * n + edge_index[0]  # (E,) position of [target, source]
    att = alpha.new_zeros(B, H, n * n)
    att[:, :, flat] = alpha.view(B, E, H).transpose(1, 2)  # (B, H, E)
    return att.view(B, H, n, n)


class CSET(nn.Module):
    """Cross-modality similarity exchange transformer.

    Built from one small option group per part (:mod:`csetgraph.models.options`); each group
    checks its own values, and the combinations are checked here. Errors are
    :class:`~csetgraph.models.options.OptionError` naming the argument (``se.layers``).

    Args:
        num_classes: training identities.
        encoder: the two ViT encoders (non-shared parameters, the same initial weights).
            Each group defaults to its class's defaults (every mechanism off).
        se: the similarity exchange; ``direction="none"`` is the baseline.
        triplet: what eq. 9 trains and the ``W'`` heads (built only with SE).
        ca: the cross attention (needs SE's mixed stream).
        mhga: the graph branch (see :class:`MHGABranch`). ``pair_graph`` trains on the ``2N``
            tokens of each pair, a shortcut inference does not have (off by default).

    Shapes:
        - ``model(vis, ir)``: ``(B, 3, H, W)`` aligned pairs -> :class:`CSETOutput`.
        - ``model(images, modality="ir")`` (use in eval mode), :meth:`embed`:
          ``(B, 3, H, W) -> (B, D)`` L2-normalised, ``D`` = width (x2 with MHGA).
        - :meth:`forward_features`: ``(B, 3, H, W) -> (B, N, C)`` normed final tokens.
        - :meth:`forward_head`: tokens ``(B, N, C)`` (+ branch tokens) -> ``(B, D)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        encoder: EncoderOptions | None = None,
        se: SEOptions | None = None,
        triplet: TripletOptions | None = None,
        ca: CAOptions | None = None,
        mhga: MHGAOptions | None = None,
    ) -> None:
        super().__init__()
        encoder, se = encoder or EncoderOptions(), se or SEOptions()
        triplet, ca, mhga = triplet or TripletOptions(), ca or CAOptions(), mhga or MHGAOptions()
        self.options = {"encoder": encoder, "se": se, "triplet": triplet, "ca": ca, "mhga": mhga}
        self._build_encoders(encoder)
        self._build_exchange(se, ca)
        self._build_heads(num_classes, triplet, ca)
        self.mhga = self._build_mhga(mhga) if mhga.enabled else None
        self.mhga_pair_graph = mhga.pair_graph
        self.feat_dim = self.vis_encoder.embed_dim * (2 if mhga.enabled else 1)
        self.neck = BNNeck(self.feat_dim, num_classes)
        # The graph buffers are constants: DDP need not broadcast them at every step.
        graphs = self.mhga.graph_buffers if self.mhga is not None else ()
        self._ddp_params_and_buffers_to_ignore = [f"mhga.{name}" for name in graphs]

    def _build_encoders(self, opts: EncoderOptions) -> None:
        """The two modality encoders (one object when ``shared``), from one initialisation."""
        kwargs = dict(
            img_size=opts.img_size,
            embed_dim=opts.embed_dim,
            depth=opts.depth,
            num_heads=opts.num_heads,
            patch_stride=opts.patch_stride,
            drop_path_rate=opts.drop_path_rate,
            pretrained=opts.pretrained,
        )
        self.vis_encoder = ViTEncoder(opts.backbone, **kwargs)
        self.share_encoders = opts.shared
        if opts.shared:
            self.ir_encoder = self.vis_encoder
            return
        self.ir_encoder = ViTEncoder(opts.backbone, **kwargs)
        if not opts.pretrained:
            # Both streams start from one initialisation, as they do from ImageNet weights.
            self.ir_encoder.load_state_dict(self.vis_encoder.state_dict())

    def _build_exchange(self, se: SEOptions, ca: CAOptions) -> None:
        """Check SE and CA against the encoders and build the similarity exchange (or None)."""
        depth = len(self.vis_encoder.blocks)
        self.se_layers = se.layers if se.enabled else ()
        bad = [k for k in self.se_layers if not 0 <= k <= depth - 2]
        if bad:
            raise OptionError(
                "se.layers", f"{list(bad)} out of range: with {depth} blocks, exchange after "
                f"blocks 0..{depth - 2}",
            )  # fmt: skip
        if (self.se_layers or ca.enabled) and self.share_encoders:
            raise OptionError("encoder.shared", "must be False with SE or CA (two encoders)")
        if ca.enabled and not self.se_layers:
            raise OptionError(
                "ca.enabled", "needs the mixed stream: enable SE (se.direction) or switch CA off"
            )
        self.se = None
        if self.se_layers:
            h, w = self.vis_encoder.grid_size
            if num_selected(h * w, se.ratio) == 0:
                raise OptionError(
                    "se.ratio", f"={se.ratio} exchanges floor({se.ratio} x {h * w} patches) = 0 "
                    f"tokens; use se.ratio >= {smallest_ratio(h * w)}",
                )  # fmt: skip
            self.se = SimilarityExchange(
                alpha=se.alpha,
                ratio=se.ratio,
                temperature=se.temperature,
                direction=se.direction,
                similarity=se.similarity,
            )

    def _build_heads(self, num_classes: int, triplet: TripletOptions, ca: CAOptions) -> None:
        """W' heads (triplet space, with a mixed stream; with ``head_identity`` a neck that
        classifies their rows) and the CA branch (W heads + neck)."""
        dim = self.vis_encoder.embed_dim
        self.triplet = triplet
        self.tri_heads = (
            nn.ModuleDict({m: triplet_head(dim, triplet) for m in MODALITIES})
            if self.se_layers
            else None
        )
        self.head_neck = (
            BNNeck(dim, num_classes) if self.se_layers and triplet.head_identity else None
        )
        self.ca_enabled = ca.enabled
        if ca.enabled:
            heads = {m: feed_forward_head(dim, ca.dropout) for m in MODALITIES}
            self.ca_heads = nn.ModuleDict(heads)
            self.cross_attention = nn.MultiheadAttention(dim, ca.heads, batch_first=True)
            self.ca_norm = nn.LayerNorm(dim)
            self.ca_neck = BNNeck(dim, num_classes)

    def _build_mhga(self, opts: MHGAOptions) -> MHGABranch:
        """The MHGA branch: an extra block per modality, copied from block L, and the layer."""
        return MHGABranch(
            self.vis_encoder.blocks[-1],
            self.ir_encoder.blocks[-1],
            self.vis_encoder.embed_dim,
            grid_size=self.vis_encoder.grid_size,
            heads=opts.heads,
            strengths=opts.strengths,
            learn_strengths=opts.learn_strengths,
            adjacency=opts.adjacency,
            graph=opts.graph,
            layer=opts.layer,
        )

    # ------------------------------------------------------------------ helpers

    def encoder(self, modality: str) -> ViTEncoder:
        """The encoder of ``modality`` (``"vis"`` or ``"ir"``)."""
        return {"vis": self.vis_encoder, "ir": self.ir_encoder}[_check_modality(modality)]

    def _run_blocks(self, modality: str, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for blk in self.encoder(modality).blocks[start:stop]:
            x = blk(x)
        return x

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters to train without weight decay (timm's hook).

        The complete set, so an optimiser needs no rule of its own: the encoders'
        ``pos_embed`` and ``cls_token`` (as timm's ViT lists them), and every parameter with at
        most one dimension (norm weights, biases, learned strengths), as timm's and nanoGPT's
        parameter groups exclude them. Names are those of :meth:`named_parameters`.
        """
        embeddings = {"pos_embed", "cls_token", "dist_token", "reg_token"}
        return {
            name
            for name, p in self.named_parameters()
            if p.ndim <= 1 or name.rsplit(".", 1)[-1] in embeddings
        }

    # ------------------------------------------------------------------ inference

    def forward_features(
        self, images: torch.Tensor, modality: str, *, return_branch: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Clean-stream tokens of single images after the final norm, as timm's ViT returns.

        With ``return_branch`` also the tokens after block ``L-1`` (the MHGA branch input,
        before any norm) that :meth:`forward_head` needs when the model has MHGA.

        Shapes:
            images ``(B, 3, H, W)`` -> tokens ``(B, N, C)`` (and branch tokens ``(B, N, C)``).
        """
        enc = self.encoder(modality)
        x = enc.embed_tokens(images)  # (B, N, C)
        depth = len(enc.blocks)
        branch = x  # with a single block the branch reads the embedded tokens
        for k, blk in enumerate(enc.blocks):
            x = blk(x)
            if k == depth - 2:
                branch = x
        x = enc.norm(x)
        return (x, branch) if return_branch else x

    def forward_head(
        self,
        tokens: torch.Tensor,
        modality: str,
        branch: torch.Tensor | None = None,
        *,
        pre_logits: bool = False,
    ) -> torch.Tensor:
        """Pool the class token, append the MHGA feature and apply the neck.

        Args:
            tokens: :meth:`forward_features` output ``(B, N, C)``.
            modality: ``"vis"`` or ``"ir"``.
            branch: the block ``L-1`` tokens (``return_branch=True``); needed with MHGA.
            pre_logits: return the neck input ``(B, D)`` instead of the embedding.

        Returns:
            The L2-normalised BatchNorm feature ``(B, D)``: the retrieval embedding.
        """
        feat = tokens[:, 0]  # (B, C)
        if self.mhga is not None:
            if branch is None:
                raise ValueError(
                    "this model has an MHGA branch: pass branch=, the tokens from "
                    "forward_features(images, modality, return_branch=True)"
                )
            feat = torch.cat([feat, self.mhga({modality: branch})[modality]], dim=1)  # (B, 2C)
        if pre_logits:
            return feat
        bn_feat, _ = self.neck(feat)
        return F.normalize(bn_feat, dim=1)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        """Retrieval embedding of single images of one modality (clean stream only)."""
        return self(images, modality=modality)

    # ------------------------------------------------------------------ training

    def forward(
        self,
        images: torch.Tensor,
        ir: torch.Tensor | None = None,
        *,
        modality: str | None = None,
        return_streams: bool = False,
    ) -> CSETOutput | torch.Tensor:
        """``model(vis, ir)``: training forward of ``B`` aligned pairs -> :class:`CSETOutput`.

        ``model(images, modality="vis" | "ir")``: the retrieval embedding ``(B, D)`` of single
        images (call it in eval mode, as torchreid and fast-reid models are called).
        """
        if modality is not None:
            if ir is not None:
                raise ValueError("pass either model(vis, ir) or model(images, modality=...)")
            tokens, branch = self.forward_features(images, modality, return_branch=True)
            return self.forward_head(tokens, modality, branch)
        if ir is None:
            raise ValueError(
                "model(images) needs modality='vis' or 'ir' for an embedding, or a second "
                "batch of infrared images for the training forward model(vis, ir)"
            )
        if images.shape[0] != ir.shape[0]:
            raise ValueError("vis and ir must hold the same number of aligned images")
        state = self._run_streams(images, ir, return_streams)
        feats = self._neck_inputs(state)
        feat = torch.cat([feats["vis"], feats["ir"]])  # (2B, D)
        bn_feat, logits = self.neck(feat)
        B = images.shape[0]
        modality = torch.arange(2, device=feat.device).repeat_interleave(B)  # (2B,) 0 vis, 1 ir
        image_rows = bn_feat if self.triplet.feature == "retrieval" else feat
        heads = self._head_rows(state)
        if heads is not None and self.triplet.heads == "replace":
            image_rows = None  # the paper's text: with SE, eq. 9 reads the W' heads only
        head_logits = None
        if self.head_neck is not None:
            _, head_logits = self.head_neck(heads)  # (4B, classes)
        ca_logits = self._cross_attention(state) if self.ca_enabled else None
        return CSETOutput(
            feat=feat,
            logits=logits,
            retrieval_feat=bn_feat,
            modality=modality,
            triplet_feat=image_rows,
            head_feat=heads,
            head_modality=None if heads is None else modality.repeat(2),
            head_rows=None if heads is None else torch.arange(2 * B, device=feat.device).repeat(2),
            head_logits=head_logits,
            ca_logits=ca_logits,
            se_info=state.se_info,
            streams=state.streams,
            health=self._health(state, ca_logits, logits.shape[1]),
        )

    def _run_streams(
        self, vis: torch.Tensor, ir: torch.Tensor, return_streams: bool
    ) -> _StreamState:
        """Step both encoders block by block; SE branches the mixed stream off the clean one."""
        B = vis.shape[0]
        depth = len(self.vis_encoder.blocks)
        images = {"vis": vis, "ir": ir}
        clean = {m: self.encoder(m).embed_tokens(images[m]) for m in MODALITIES}  # (B, N, C)
        mixed: dict[str, torch.Tensor] | None = None
        branch = dict(clean)  # F^{L-1}; the embedded tokens when there is a single block
        streams: dict[int, dict] | None = {} if return_streams else None
        se_info: list = []
        for k in range(depth):
            for m in MODALITIES:
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
            if streams is not None:
                streams[k] = {"clean": dict(clean), "mixed": None if mixed is None else dict(mixed)}
        return _StreamState(clean, mixed, branch, se_info, streams)

    def _neck_inputs(self, state: _StreamState) -> dict[str, torch.Tensor]:
        """Neck input per modality: final class token (+ pooled MHGA feature)."""
        if self.mhga is not None and self.mhga_pair_graph:  # one graph of 2N nodes per pair
            cls = {m: self.encoder(m).norm(t)[:, 0] for m, t in state.clean.items()}  # (B, C)
            graph, attention = self.mhga(state.branch, return_attention_weights=True)
            state.mhga_attention.append(attention.detach())
            return {m: torch.cat([cls[m], graph[m]], dim=1) for m in cls}  # (B, 2C)
        # Each image's own graph of N nodes, in training as at inference (forward_head's
        # pre-logits feature, with the attention kept for the health statistics).
        feats = {}
        for m, t in state.clean.items():
            cls = self.encoder(m).norm(t)[:, 0]  # (B, C)
            if self.mhga is None:
                feats[m] = cls
                continue
            graph, attention = self.mhga({m: state.branch[m]}, return_attention_weights=True)
            state.mhga_attention.append(attention.detach())
            feats[m] = torch.cat([cls, graph[m]], dim=1)  # (B, 2C)
        return feats

    def _head_rows(self, state: _StreamState) -> torch.Tensor | None:
        """``(4B, C)`` W' rows: clean vis, clean ir, mixed vis, mixed ir (``None`` without SE)."""
        if self.tri_heads is None:
            return None
        rows = [self._class_token_head(m, state.clean[m]) for m in MODALITIES]
        rows += [self._class_token_head(m, state.mixed[m]) for m in MODALITIES]
        return torch.cat(rows)  # (4B, C)

    def _class_token_head(self, modality: str, tokens: torch.Tensor) -> torch.Tensor:
        """``W'`` of ``modality`` on the final-normed class token of ``tokens``."""
        return self.tri_heads[modality](self.encoder(modality).norm(tokens)[:, 0])  # (B, C)

    def _triplet_feature_name(self) -> str:
        """What eq. 9 trains, a key of :data:`~csetgraph.models.health.TRIPLET_FEATURES`."""
        if self.tri_heads is None:
            return self.triplet.feature
        if self.triplet.heads == "replace":
            return "heads"
        return f"{self.triplet.feature}+heads"

    def _health(
        self, state: _StreamState, ca_logits: torch.Tensor | None, num_classes: int
    ) -> ModelHealth:
        """The mechanism statistics of this forward (see :mod:`csetgraph.models.health`)."""
        cosine = {}
        if state.mixed is not None:
            # The modality that receives: v2i exchanges into the visible stream.
            receiving = {"v2i": ("vis",), "i2v": ("ir",), "both": MODALITIES}[self.se.direction]
            for m in receiving:
                norm = self.encoder(m).norm
                cosine[m] = class_token_cosine(norm(state.clean[m]), norm(state.mixed[m]))
        mass = uniform = None
        if state.mhga_attention:
            n = state.mhga_attention[0].shape[-1]
            h, w = self.mhga.grid_size
            rel = relation_codes(
                h, w, adjacency=self.mhga.adjacency, paired=n != 1 + h * w,
                device=state.mhga_attention[0].device,
            )  # fmt: skip
            mass = torch.stack([relation_mass(a, rel) for a in state.mhga_attention]).mean(0)
            uniform = uniform_mass(rel, local_edges(rel) if self.mhga.graph == "local" else None)
        return ModelHealth(
            se_layers=tuple(self.se_layers),
            class_cosine=cosine,
            ca_entropy=None if ca_logits is None else logit_entropy(ca_logits),
            num_classes=num_classes,
            mhga_mass=mass,
            mhga_uniform=uniform,
            triplet_feature=self._triplet_feature_name(),
        )

    def _cross_attention(self, state: _StreamState) -> torch.Tensor:
        """Identity logits of the mixed class token attending to the clean tokens (CA)."""
        attended = []
        for m in MODALITIES:
            q = self.ca_heads[m](self.encoder(m).norm(state.mixed[m]))  # (B, N, C)
            kv = self.ca_heads[m](self.encoder(m).norm(state.clean[m]))  # (B, N, C)
            a, _ = self.cross_attention(q, kv, kv, need_weights=False)
            attended.append(self.ca_norm(q + a)[:, 0])  # (B, C)
        _, ca_logits = self.ca_neck(torch.cat(attended))
        return ca_logits
