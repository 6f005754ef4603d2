"""Multi-relational heterogeneous graph attention (MHGA, paper eq. 4-7) in PyG's anatomy.

``MHGAConv`` is a ``MessagePassing`` layer for any graph whose edges carry a relation code;
``DenseMHGAConv`` is its twin for batches of complete graphs given as a dense ``(n, n)``
relation matrix. Both have the parameters ``lin``, ``att_src``, ``att_dst``, ``bias`` and
``strengths``, so a state dict moves between them, and they compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.utils import softmax

from csetgraph.config import PAPER_STRENGTHS


def _init_attention(
    module: torch.nn.Module,
    heads: int,
    out_channels: int,
    concat: bool,
    strengths: Sequence[float],
    learn: bool,
    bias: bool,
) -> None:
    """The parameters both MHGA layers share: ``att_src``, ``att_dst``, ``strengths``, ``bias``."""
    module.att_src = Parameter(torch.empty(1, heads, out_channels))
    module.att_dst = Parameter(torch.empty(1, heads, out_channels))
    _init_strengths(module, strengths, learn)
    module._initial_strengths = tuple(float(s) for s in strengths)
    if bias:
        module.bias = Parameter(torch.empty(heads * out_channels if concat else out_channels))
    else:
        module.register_parameter("bias", None)


def _reset_attention(module: torch.nn.Module) -> None:
    """Glorot attention vectors, zero bias, the initial strengths restored."""
    glorot(module.att_src)
    glorot(module.att_dst)
    zeros(module.bias)
    with torch.no_grad():
        module.strengths.copy_(torch.tensor(module._initial_strengths))


def _init_strengths(module: torch.nn.Module, strengths: Sequence[float], learn: bool) -> None:
    values = torch.as_tensor(list(strengths), dtype=torch.float)
    if values.dim() != 1 or values.numel() < 1:
        raise ValueError(
            "strengths must be a flat sequence with one value per relation code "
            f"(e.g. {PAPER_STRENGTHS} for same, adjacent, distant), got {strengths!r}"
        )
    if learn:
        module.strengths = Parameter(values)
    else:
        # A buffer, so that the state dict key is `strengths` either way and moves with .to().
        module.register_buffer("strengths", values)


class MHGAConv(MessagePassing):
    r"""Relational graph attention with a fixed (or learnable) strength per edge type.

    The MHGA operator of CSET (paper eq. 4-7), a GAT whose attention logits are scaled by the
    strength :math:`\lambda_{r}` of the edge's relation :math:`r_{ij}` (``edge_type``):

    .. math::
        e_{ij} &= \mathrm{LeakyReLU}\big(\mathbf{a}_{src}^\top \mathbf{W} \mathbf{h}_j
                 + \mathbf{a}_{dst}^\top \mathbf{W} \mathbf{h}_i\big) \cdot \lambda_{r_{ij}}

        \alpha_{ij} &= \frac{\exp(e_{ij})}{\sum_{k \in \mathcal{N}(i)} \exp(e_{ik})}

        \mathbf{h}_i' &= \sum_{j \in \mathcal{N}(i)} \alpha_{ij} \mathbf{W} \mathbf{h}_j
                        + \mathbf{b}

    per head; heads are concatenated (``concat=True``) or averaged. The strength multiplies
    *after* the activation (eq. 5). :math:`\mathcal{N}(i)` is the set of sources of the edges
    into :math:`i`: no self loops are added, since the token graphs of
    :mod:`csetgraph.graph` already contain them (relation ``same``). With all strengths equal
    to 1 the layer is PyG's ``GATConv(add_self_loops=False)``.

    Args:
        in_channels: Size of each input sample, or ``-1`` for lazy initialisation. A tuple
            ``(src, dst)`` gives bipartite graphs separate weights ``lin_src`` and ``lin_dst``
            (as in ``GATConv``); an int shares one weight ``lin``.
        out_channels: Size of each output sample per head.
        heads: Number of attention heads.
        concat: Concatenate the heads (else average them).
        negative_slope: LeakyReLU slope.
        dropout: Dropout probability of the normalised attention coefficients.
        strengths: Strength per edge type, in code order (``same, adjacent, distant`` for
            token graphs; default the paper's ``csetgraph.config.PAPER_STRENGTHS``). Any
            number of edge types works.
        learn_strengths: Make ``strengths`` a parameter instead of a fixed buffer.
        bias: Add a learnable bias.
        **kwargs: Passed to :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{s}), (|\mathcal{V}_t|, F_{t}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (row 0 sources, row 1 targets),
          edge types :math:`(|\mathcal{E}|)` long codes.
        - **output:** node features :math:`(|\mathcal{V}_t|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if ``concat=False``; with
          ``return_attention_weights`` also ``(edge_index, alpha)``, ``alpha`` of shape
          :math:`(|\mathcal{E}|, H)`.
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        strengths: Sequence[float] = PAPER_STRENGTHS,
        learn_strengths: bool = False,
        bias: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        kwargs.setdefault("node_dim", 0)
        super().__init__(**kwargs)
        if heads < 1 or out_channels < 1:
            raise ValueError(f"heads and out_channels must be >= 1, got {heads}, {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.learn_strengths = learn_strengths

        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = Linear(
                in_channels, heads * out_channels, bias=False, weight_initializer="glorot"
            )
        else:
            self.lin_src = Linear(
                in_channels[0], heads * out_channels, False, weight_initializer="glorot"
            )
            self.lin_dst = Linear(
                in_channels[1], heads * out_channels, False, weight_initializer="glorot"
            )
        _init_attention(self, heads, out_channels, concat, strengths, learn_strengths, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise weights (Glorot), zero the bias and restore the initial strengths."""
        super().reset_parameters()
        for lin in (self.lin, self.lin_src, self.lin_dst):
            if lin is not None:
                lin.reset_parameters()
        _reset_attention(self)

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor | None],
        edge_index: Tensor,
        edge_type: Tensor,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Runs the layer.

        Args:
            x: Node features, or ``(x_src, x_dst)`` for a bipartite graph.
            edge_index: ``(2, E)`` long, row 0 sources and row 1 targets.
            edge_type: ``(E,)`` long relation codes indexing ``strengths``.
            return_attention_weights: If true, also return ``(edge_index, alpha)`` with the
                attention coefficients of every edge (as ``GATConv`` does).
        """
        heads, channels = self.heads, self.out_channels
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must be (2, E), got {tuple(edge_index.shape)}")
        if edge_type.dim() != 1 or edge_type.size(0) != edge_index.size(1):
            raise ValueError(
                f"edge_type must hold one code per edge, shape ({edge_index.size(1)},), "
                f"got {tuple(edge_type.shape)}"
            )

        if isinstance(x, Tensor):
            x_src_in, x_dst_in = x, x
        else:
            x_src_in, x_dst_in = x
        if x_src_in.dim() != 2:
            raise ValueError(
                f"MHGAConv takes flat node features (num_nodes, C), got {tuple(x_src_in.shape)}; "
                "use DenseMHGAConv for batched (B, n, C) complete graphs"
            )
        lin_src = self.lin if self.lin is not None else self.lin_src
        lin_dst = self.lin if self.lin is not None else self.lin_dst
        x_src = lin_src(x_src_in).view(-1, heads, channels)  # (n_src, H, C)
        if isinstance(x, Tensor) and self.lin is not None:
            x_dst = x_src  # one shared transform: no need to compute it twice
        elif x_dst_in is not None:
            x_dst = lin_dst(x_dst_in).view(-1, heads, channels)  # (n_dst, H, C)
        else:
            x_dst = None

        alpha_src = (x_src * self.att_src).sum(dim=-1)  # (n_src, H)
        alpha_dst = None if x_dst is None else (x_dst * self.att_dst).sum(dim=-1)  # (n_dst, H)

        # edge_updater_type: (alpha: OptPairTensor, edge_type: Tensor)
        alpha = self.edge_updater(edge_index, alpha=(alpha_src, alpha_dst), edge_type=edge_type)
        # propagate_type: (x: OptPairTensor, alpha: Tensor)
        out = self.propagate(edge_index, x=(x_src, x_dst), alpha=alpha)  # (n_dst, H, C)

        if self.concat:
            out = out.reshape(-1, heads * channels)  # (n_dst, H*C)
        else:
            out = out.mean(dim=1)  # (n_dst, C)
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            return out, (edge_index, alpha)
        return out

    def edge_update(
        self,
        alpha_j: Tensor,
        alpha_i: Tensor | None,
        edge_type: Tensor,
        index: Tensor,
        ptr: Tensor | None,
        dim_size: int | None,
    ) -> Tensor:
        # Summing the two node terms is a^T [W h_i || W h_j] without building the concatenation.
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i  # (E, H)
        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = alpha * self.strengths[edge_type].unsqueeze(-1).to(alpha.dtype)  # eq. 5
        alpha = softmax(alpha, index, ptr, dim_size)  # eq. 6, over the edges into each target
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j  # (E, H, C)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}, strengths={tuple(round(float(s), 4) for s in self.strengths)})"
        )


class DenseMHGAConv(torch.nn.Module):
    r"""MHGA on batches of complete (or masked) graphs with a dense relation matrix.

    The same operator as :class:`MHGAConv` with the same parameters (``lin``, ``att_src``,
    ``att_dst``, ``bias``, ``strengths``), evaluated with batched matrix products: the
    attention logits are a ``(B, H, n, n)`` tensor and the aggregation is
    :math:`\alpha \, (\mathbf{X}\mathbf{W})`, so no per-edge message of width ``C`` is ever
    built. For a pair token graph use ``relation = csetgraph.graph.relation_matrix(h, w)``.

    .. math::
        e_{bij} = \mathrm{LeakyReLU}\big(\mathbf{a}_{src}^\top \mathbf{W} \mathbf{x}_{bj}
                 + \mathbf{a}_{dst}^\top \mathbf{W} \mathbf{x}_{bi}\big) \cdot
                 \lambda_{R_{ij}}, \qquad
        \mathbf{x}_{bi}' = \sum_{j:\,M_{bij}} \mathrm{softmax}_j(e_{bij})\,
                 \mathbf{W}\mathbf{x}_{bj} + \mathbf{b}

    Args:
        in_channels: Size of each input sample (``-1`` for lazy initialisation).
        out_channels, heads, concat, negative_slope, dropout, strengths, learn_strengths,
        bias: As in :class:`MHGAConv`.

    Shapes:
        - **input:** ``x`` :math:`(B, n, F_{in})` (or :math:`(n, F_{in})`, treated as
          ``B = 1``), ``relation`` :math:`(n, n)` or :math:`(B, n, n)` long codes with
          ``relation[i, j]`` the type of the edge from source ``j`` to target ``i``,
          optional ``mask`` :math:`(B, n)` bool valid nodes, or :math:`(n, n)` /
          :math:`(B, n, n)` bool edges ``[target, source]``.
        - **output:** :math:`(B, n, H * F_{out})` or :math:`(B, n, F_{out})` if
          ``concat=False`` (rows of invalid nodes are zero); with
          ``return_attention_weights=True`` also ``alpha`` :math:`(B, H, n, n)`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        strengths: Sequence[float] = PAPER_STRENGTHS,
        learn_strengths: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        if not isinstance(in_channels, int):
            raise TypeError(
                "DenseMHGAConv needs one in_channels int (complete graphs are not bipartite), "
                f"got {in_channels!r}"
            )
        if heads < 1 or out_channels < 1:
            raise ValueError(f"heads and out_channels must be >= 1, got {heads}, {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.learn_strengths = learn_strengths
        self.lin = Linear(
            in_channels, heads * out_channels, bias=False, weight_initializer="glorot"
        )
        _init_attention(self, heads, out_channels, concat, strengths, learn_strengths, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise weights (Glorot), zero the bias and restore the initial strengths."""
        self.lin.reset_parameters()
        _reset_attention(self)

    def forward(
        self,
        x: Tensor,
        relation: Tensor,
        mask: Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Runs the layer on ``B`` graphs of ``n`` nodes each.

        Args:
            x: Node features ``(B, n, C)``.
            relation: Relation codes ``(n, n)`` or ``(B, n, n)``, ``[target, source]``.
            mask: ``None`` (complete graphs), ``(B, n)`` valid nodes, or ``(n, n)`` /
                ``(B, n, n)`` existing edges ``[target, source]``.
            return_attention_weights: Also return the attention ``(B, H, n, n)``.
        """
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)  # (1, n, C)
        if x.dim() != 3:
            raise ValueError(f"x must be (B, n, C), got {tuple(x.shape)}")
        b, n, _ = x.shape
        heads, channels = self.heads, self.out_channels
        if relation.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"relation must hold integer codes, got dtype {relation.dtype}")
        if relation.shape[-2:] != (n, n) or relation.dim() not in (2, 3):
            raise ValueError(
                f"relation must be (n, n) or (B, n, n) with n={n} nodes, got "
                f"{tuple(relation.shape)}; build it with csetgraph.graph.relation_matrix"
            )

        h = self.lin(x).view(b, n, heads, channels)  # (B, n, H, C)
        alpha_src = (h * self.att_src).sum(dim=-1)  # (B, n, H)
        alpha_dst = (h * self.att_dst).sum(dim=-1)  # (B, n, H)
        # logits[b, k, i, j] = a_dst . W x_i + a_src . W x_j: target rows, source columns.
        logits = alpha_dst.transpose(1, 2).unsqueeze(-1) + alpha_src.transpose(1, 2).unsqueeze(-2)
        logits = F.leaky_relu(logits, self.negative_slope)  # (B, H, n, n)
        strength = self.strengths.to(logits.dtype)[relation.long()]  # (n, n) or (B, n, n)
        if strength.dim() == 3:
            strength = strength.unsqueeze(1)  # (B, 1, n, n)
        logits = logits * strength

        edge_mask, node_mask = self._edge_mask(mask, b, n)
        if edge_mask is not None:
            # A finite fill (not -inf) keeps rows without any edge free of NaN in both passes;
            # their coefficients are zeroed right after the softmax.
            logits = logits.masked_fill(~edge_mask, torch.finfo(logits.dtype).min)
        alpha = torch.softmax(logits, dim=-1)
        if edge_mask is not None:
            alpha = alpha.masked_fill(~edge_mask, 0.0)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)

        out = alpha @ h.transpose(1, 2)  # (B, H, n, C)
        if self.concat:
            out = out.transpose(1, 2).reshape(b, n, heads * channels)  # (B, n, H*C)
        else:
            out = out.mean(dim=1)  # (B, n, C)
        if self.bias is not None:
            out = out + self.bias
        if node_mask is not None:
            out = out * node_mask.view(b, n, 1).to(out.dtype)  # invalid nodes output zero
        if squeeze:
            out = out.squeeze(0)  # (n, H*C)
        if return_attention_weights:
            return out, alpha
        return out

    @staticmethod
    def _edge_mask(mask: Tensor | None, b: int, n: int) -> tuple[Tensor | None, Tensor | None]:
        """Turns ``mask`` into a broadcastable ``[target, source]`` edge mask and a node mask."""
        if mask is None:
            return None, None
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        if mask.shape == (b, n):
            edge = mask.view(b, 1, 1, n) & mask.view(b, 1, n, 1)  # (B, 1, n, n)
            return edge, mask
        if mask.shape == (n, n):
            return mask.view(1, 1, n, n), None
        if mask.shape == (b, n, n):
            return mask.view(b, 1, n, n), None
        raise ValueError(
            f"mask must be (B, n)=({b}, {n}) valid nodes or (n, n) / (B, n, n) edges, "
            f"got {tuple(mask.shape)}"
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}, strengths={tuple(round(float(s), 4) for s in self.strengths)})"
        )
