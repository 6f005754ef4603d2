"""Multi-relational heterogeneous graph attention (MHGA, paper eq. 4-7) in PyG's anatomy.

``MHGAConv`` is a ``MessagePassing`` layer for any graph whose edges carry a relation code
(an ``edge_index`` with ``edge_type``, or a sparse adjacency); ``DenseMHGAConv`` is its twin
for batches of complete graphs given as a dense ``(n, n)`` relation matrix;
``HeteroMHGAConv`` runs the same layer on ``x_dict`` / ``edge_index_dict`` (PyG's
heterogeneous form) with one softmax per target node across all relations and node types, as
eq. 6 has it. All three hold the parameters ``lin``, ``att_src``, ``att_dst``, ``bias`` and
``strengths`` (``HeteroMHGAConv`` under ``conv.``), so a state dict moves between them, and
they compute the same numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric import EdgeIndex
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, softmax

from csetgraph.graph.token_graph import RELATIONS

#: MHGA's relation strengths (same, adjacent, distant), the paper's lambda values (eq. 5,
#: section 4.1). The one definition: the layers' default, imported by the config and model.
PAPER_STRENGTHS: tuple[float, float, float] = (1.0, 0.7, 0.3)

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class _MHGAAttention:
    """What the MHGA layers share: the attention parameters, their reset, the strength lookup
    (which refuses codes outside ``0 .. R-1``) and a ``repr`` built from the constructor's
    arguments (never from tensor values, so it works on the meta device and never syncs)."""

    def _init_attention(
        self,
        heads: int,
        out_channels: int,
        concat: bool,
        strengths: Sequence[float],
        learn: bool,
        bias: bool,
    ) -> None:
        if heads < 1 or out_channels < 1:
            raise ValueError(f"heads and out_channels must be >= 1, got {heads}, {out_channels}")
        values = torch.as_tensor(list(strengths), dtype=torch.float)
        if values.dim() != 1 or values.numel() < 1:
            raise ValueError(
                "strengths must be a flat sequence with one value per relation code "
                f"(e.g. {PAPER_STRENGTHS} for same, adjacent, distant), got {strengths!r}"
            )
        self._initial_strengths = tuple(float(s) for s in strengths)
        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))
        if learn:
            self.strengths = Parameter(values)
        else:
            # A buffer, so that the state dict key is `strengths` either way and moves with .to().
            self.register_buffer("strengths", values)
        if bias:
            self.bias = Parameter(torch.empty(heads * out_channels if concat else out_channels))
        else:
            self.register_parameter("bias", None)

    def _reset_attention(self) -> None:
        """Glorot attention vectors, zero bias, the initial strengths restored."""
        glorot(self.att_src)
        glorot(self.att_dst)
        zeros(self.bias)
        with torch.no_grad():
            self.strengths.copy_(torch.tensor(self._initial_strengths))

    def _strength_of(self, codes: Tensor, name: str, dtype: torch.dtype) -> Tensor:
        """``strengths[codes]``, refusing a code outside ``0 .. R-1``.

        A negative code would otherwise index from the end (``-1`` silently meaning the last
        relation). On the CPU in eager mode the check raises a ``ValueError`` that names the
        codes; on an accelerator, or while compiling, it is a device-side assertion, so that
        it needs no host synchronisation and no graph break.
        """
        if codes.dtype not in _INT_DTYPES:
            raise TypeError(f"{name} must hold integer codes, got dtype {codes.dtype}")
        num = self.strengths.numel()
        if codes.device.type == "cpu" and not torch.compiler.is_compiling():
            bad = (codes < 0) | (codes >= num)
            if bool(bad.any()):
                found = sorted(set(codes[bad].tolist()))[:5]
                raise ValueError(
                    f"{name} holds relation codes {found} outside 0..{num - 1}: there is one "
                    f"strength per code ({num} given); fix the codes or pass one strength per "
                    "relation"
                )
        elif codes.device.type != "meta":
            torch._assert_async(
                ((codes >= 0) & (codes < num)).all(),
                f"{name} holds a relation code outside 0..{num - 1} (one strength per code)",
            )
        return self.strengths.to(dtype)[codes.long()]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}, strengths={self._initial_strengths})"
        )


def _sparse_edges(adj_t: Tensor | SparseTensor) -> tuple[Tensor, Tensor | None, int]:
    """A sparse ``adj_t`` (``[target, source]``) as an ``edge_index`` in its stored order.

    Returns ``(edge_index, values, num_entries)``: row 0 sources, row 1 targets, one column per
    stored entry in the order the adjacency holds them (row-major for CSR, a coalesced COO and
    ``SparseTensor``; column-major for CSC; insertion order for an uncoalesced COO), so that
    ``values[k]`` and ``edge_type[k]`` belong to edge ``k``.
    """
    if isinstance(adj_t, SparseTensor):
        row, col, values = adj_t.coo()
    elif adj_t.dim() != 2:
        raise ValueError(
            f"a sparse adjacency must be 2-D (num_targets, num_sources), got {tuple(adj_t.shape)}"
        )
    elif adj_t.layout == torch.sparse_coo:
        row, col = adj_t._indices()
        values = adj_t._values()
    elif adj_t.layout == torch.sparse_csr:
        col, values = adj_t.col_indices(), adj_t.values()
        row = _ptr_to_index(adj_t.crow_indices(), col.numel())
    elif adj_t.layout == torch.sparse_csc:
        row, values = adj_t.row_indices(), adj_t.values()
        col = _ptr_to_index(adj_t.ccol_indices(), row.numel())
    else:
        raise ValueError(f"unsupported sparse layout {adj_t.layout}; use COO, CSR or CSC")
    return torch.stack([col.long(), row.long()]), values, row.numel()


def _ptr_to_index(ptr: Tensor, numel: int) -> Tensor:
    """Compressed pointers ``(n + 1,)`` -> the index of each entry ``(numel,)``."""
    n = ptr.numel() - 1
    return torch.arange(n, device=ptr.device).repeat_interleave(ptr.diff(), output_size=numel)


def _with_values(adj_t: Tensor | SparseTensor, values: Tensor) -> Tensor | SparseTensor:
    """``adj_t`` with ``values`` (one row per stored entry, stored order) as its values."""
    if isinstance(adj_t, SparseTensor):
        return adj_t.set_value(values, layout="coo")
    size = tuple(adj_t.shape[:2]) + tuple(values.shape[1:])
    if adj_t.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(
            adj_t._indices(), values, size, is_coalesced=adj_t.is_coalesced()
        )
    if adj_t.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(adj_t.crow_indices(), adj_t.col_indices(), values, size)
    return torch.sparse_csc_tensor(adj_t.ccol_indices(), adj_t.row_indices(), values, size)


class MHGAConv(_MHGAAttention, MessagePassing):
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
    into :math:`i`, whatever their relation: one softmax per target over all its in-edges
    (eq. 6). No self loops are added, since the token graphs of :mod:`csetgraph.graph` already
    contain them (relation ``same``). With all strengths equal to 1 the layer is PyG's
    ``GATConv(add_self_loops=False)``.

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
            token graphs; default the paper's :data:`PAPER_STRENGTHS`). Any number of edge
            types works; a code outside ``0 .. len(strengths) - 1`` is refused.
        learn_strengths: Make ``strengths`` a parameter instead of a fixed buffer.
        bias: Add a learnable bias.
        **kwargs: Passed to :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{s}), (|\mathcal{V}_t|, F_{t}))` if bipartite
          (:math:`F_t` may be ``None`` with ``size``);
          edge indices :math:`(2, |\mathcal{E}|)` (row 0 sources, row 1 targets) with edge
          types :math:`(|\mathcal{E}|)` integer codes, or a sparse adjacency ``adj_t``
          :math:`(|\mathcal{V}_t|, |\mathcal{V}_s|)` (``torch.sparse`` COO/CSR/CSC or
          ``torch_sparse.SparseTensor``) whose integer values are the codes (or with
          ``edge_type`` in its stored order);
          optional ``size`` :math:`(|\mathcal{V}_s|, |\mathcal{V}_t|)`.
        - **output:** node features :math:`(|\mathcal{V}_t|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if ``concat=False``; with
          ``return_attention_weights`` also ``(edge_index, alpha)``, ``alpha`` of shape
          :math:`(|\mathcal{E}|, H)` (for a sparse adjacency, as ``GATConv`` returns it: the
          adjacency with ``alpha`` as values, and ``alpha``; a ``SparseTensor`` alone).
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
        self._init_attention(heads, out_channels, concat, strengths, learn_strengths, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise weights (Glorot), zero the bias and restore the initial strengths."""
        super().reset_parameters()
        for lin in (self.lin, self.lin_src, self.lin_dst):
            if lin is not None:
                lin.reset_parameters()
        self._reset_attention()

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor | None],
        edge_index: Tensor | SparseTensor,
        edge_type: Tensor | None = None,
        return_attention_weights: bool | None = None,
        *,
        size: tuple[int, int] | None = None,
    ):
        """Runs the layer.

        Args:
            x: Node features, or ``(x_src, x_dst)`` for a bipartite graph; ``x_dst`` may be
                ``None`` (as ``HeteroConv`` passes it for a node type without features), and
                then ``size`` (or an adjacency that carries its shape) says how many targets.
            edge_index: ``(2, E)`` integer indices, row 0 sources and row 1 targets (also a
                PyG ``EdgeIndex``), or a sparse adjacency ``adj_t`` of shape
                ``(n_dst, n_src)``: ``torch.sparse`` COO/CSR/CSC or ``SparseTensor``.
            edge_type: ``(E,)`` integer relation codes indexing ``strengths``, one per column
                of ``edge_index``. With a sparse adjacency, ``None`` takes the codes from its
                integer values (as ``RGCNConv`` does); given, it follows the adjacency's
                stored entries (as ``RGATConv`` expects): row-major for CSR, coalesced COO and
                ``SparseTensor``, column-major for CSC, insertion order for an uncoalesced
                COO. Storing the codes as values is the order-safe form.
            return_attention_weights: If true, also return the attention coefficients of
                every edge, as ``GATConv`` does.
            size: ``(n_src, n_dst)``, keyword only (the fourth positional argument stays
                ``return_attention_weights`` for existing callers).
        """
        if isinstance(return_attention_weights, tuple):
            raise TypeError(
                "size is keyword-only in MHGAConv: call conv(x, edge_index, edge_type, "
                "size=(n_src, n_dst))"
            )
        heads, channels = self.heads, self.out_channels
        adj_t = None
        if is_torch_sparse_tensor(edge_index) or isinstance(edge_index, SparseTensor):
            adj_t = edge_index
            edge_index, values, num_entries = _sparse_edges(adj_t)
            adj_size = (adj_t.size(1), adj_t.size(0))
            if size is not None and tuple(size) != adj_size:
                raise ValueError(
                    f"size={tuple(size)} disagrees with the adjacency's shape (n_dst, n_src)="
                    f"{tuple(adj_t.size())[:2]}; size is (n_src, n_dst), or leave it out"
                )
            size = adj_size
            if edge_type is None:
                if values is None or values.dtype not in _INT_DTYPES or values.dim() != 1:
                    raise ValueError(
                        "a sparse adjacency needs relation codes: store them as its integer "
                        "values, or pass edge_type with one code per stored entry "
                        f"({num_entries}), in the adjacency's stored order"
                    )
                edge_type = values
            what = f"one code per stored entry of the adjacency ({num_entries},)"
        else:
            if not isinstance(edge_index, Tensor) or edge_index.dtype not in _INT_DTYPES:
                raise ValueError(
                    "edge_index must be an integer (2, E) tensor or a sparse adjacency adj_t "
                    f"(torch.sparse or SparseTensor), got {type(edge_index).__name__}"
                    + (f" of dtype {edge_index.dtype}" if isinstance(edge_index, Tensor) else "")
                )
            if edge_index.dim() != 2 or edge_index.size(0) != 2:
                raise ValueError(f"edge_index must be (2, E), got {tuple(edge_index.shape)}")
            if edge_type is None:
                raise ValueError(
                    "edge_type is required with an edge_index: one relation code per edge"
                )
            what = f"one code per edge, shape ({edge_index.size(1)},)"
        if edge_type.dim() != 1 or edge_type.size(0) != edge_index.size(1):
            raise ValueError(f"edge_type must hold {what}, got {tuple(edge_type.shape)}")

        if isinstance(x, Tensor):
            x_src_in, x_dst_in = x, x
        else:
            x_src_in, x_dst_in = x
        if x_src_in.dim() != 2:
            raise ValueError(
                f"MHGAConv takes flat node features (num_nodes, C), got {tuple(x_src_in.shape)}; "
                "use DenseMHGAConv for batched (B, n, C) complete graphs"
            )
        if x_dst_in is None and size is None:
            known = isinstance(edge_index, EdgeIndex) and edge_index.sparse_size(1) is not None
            if not known:
                raise ValueError(
                    "x is (x_src, None): pass size=(n_src, n_dst) so that the layer knows how "
                    "many target nodes to return (without it, one row per source would come back)"
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
        strength = self._strength_of(edge_type, "edge_type", alpha_src.dtype)  # (E,)

        # edge_updater_type: (alpha: OptPairTensor, strength: Tensor)
        alpha = self.edge_updater(
            edge_index, alpha=(alpha_src, alpha_dst), strength=strength, size=size
        )
        # propagate_type: (x: OptPairTensor, alpha: Tensor)
        out = self.propagate(edge_index, x=(x_src, x_dst), alpha=alpha, size=size)  # (n_dst,H,C)

        if self.concat:
            out = out.reshape(-1, heads * channels)  # (n_dst, H*C)
        else:
            out = out.mean(dim=1)  # (n_dst, C)
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            if adj_t is None:
                return out, (edge_index, alpha)
            if isinstance(adj_t, SparseTensor):
                return out, _with_values(adj_t, alpha)
            return out, (_with_values(adj_t, alpha), alpha)
        return out

    def edge_update(
        self,
        alpha_j: Tensor,
        alpha_i: Tensor | None,
        strength: Tensor,
        index: Tensor,
        ptr: Tensor | None,
        dim_size: int | None,
    ) -> Tensor:
        # Summing the two node terms is a^T [W h_i || W h_j] without building the concatenation.
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i  # (E, H)
        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = alpha * strength.unsqueeze(-1)  # eq. 5
        alpha = softmax(alpha, index, ptr, dim_size)  # eq. 6, over all edges into each target
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j  # (E, H, C)


class DenseMHGAConv(_MHGAAttention, torch.nn.Module):
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
          ``B = 1``), ``relation`` :math:`(n, n)` or :math:`(B, n, n)` integer codes with
          ``relation[i, j]`` the type of the edge from source ``j`` to target ``i``,
          optional ``mask`` :math:`(B, n)` bool valid nodes (as in PyG's ``DenseGATConv``),
          optional ``edge_mask`` :math:`(n, n)` or :math:`(B, n, n)` bool edges
          ``[target, source]``.
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
        self._init_attention(heads, out_channels, concat, strengths, learn_strengths, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise weights (Glorot), zero the bias and restore the initial strengths."""
        self.lin.reset_parameters()
        self._reset_attention()

    def forward(
        self,
        x: Tensor,
        relation: Tensor,
        mask: Tensor | None = None,
        return_attention_weights: bool = False,
        *,
        edge_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Runs the layer on ``B`` graphs of ``n`` nodes each.

        Args:
            x: Node features ``(B, n, C)``.
            relation: Relation codes ``(n, n)`` or ``(B, n, n)``, ``[target, source]``.
            mask: ``None`` or ``(B, n)`` bool valid nodes (``(n,)`` for an unbatched ``x``);
                an invalid node neither sends nor receives, and its output row is zero.
            return_attention_weights: Also return the attention ``(B, H, n, n)``.
            edge_mask: ``None`` (complete graphs) or ``(n, n)`` / ``(B, n, n)`` bool, the
                existing edges ``[target, source]``; keyword only, so that a square mask is
                never mistaken for a node mask whatever the batch size.
        """
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)  # (1, n, C)
            if mask is not None and mask.dim() == 1:
                mask = mask.unsqueeze(0)  # (1, n)
        if x.dim() != 3:
            raise ValueError(f"x must be (B, n, C), got {tuple(x.shape)}")
        b, n, _ = x.shape
        heads, channels = self.heads, self.out_channels
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
        strength = self._strength_of(relation, "relation", logits.dtype)  # (n, n) or (B, n, n)
        if strength.dim() == 3:
            strength = strength.unsqueeze(1)  # (B, 1, n, n)
        logits = logits * strength

        edges, node_mask = self._masks(mask, edge_mask, b, n)
        if edges is not None:
            # A finite fill (not -inf) keeps rows without any edge free of NaN in both passes;
            # their coefficients are zeroed right after the softmax.
            logits = logits.masked_fill(~edges, torch.finfo(logits.dtype).min)
        alpha = torch.softmax(logits, dim=-1)
        if edges is not None:
            alpha = alpha.masked_fill(~edges, 0.0)
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
    def _masks(
        mask: Tensor | None, edge_mask: Tensor | None, b: int, n: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """A broadcastable ``(B|1, 1, n, n)`` edge mask from both masks, and the node mask."""
        edges = None
        if edge_mask is not None:
            if edge_mask.dtype != torch.bool:
                raise TypeError(f"edge_mask must be a bool tensor, got dtype {edge_mask.dtype}")
            if edge_mask.shape == (n, n):
                edges = edge_mask.view(1, 1, n, n)
            elif edge_mask.shape == (b, n, n):
                edges = edge_mask.view(b, 1, n, n)
            else:
                raise ValueError(
                    f"edge_mask must be (n, n)=({n}, {n}) or (B, n, n)=({b}, {n}, {n}) edges "
                    f"[target, source], got {tuple(edge_mask.shape)}"
                )
        if mask is None:
            return edges, None
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        if mask.shape != (b, n):
            raise ValueError(
                f"mask must be (B, n)=({b}, {n}) valid nodes, got {tuple(mask.shape)}; pass "
                "edges as edge_mask=(n, n) or (B, n, n)"
            )
        nodes = mask.view(b, 1, 1, n) & mask.view(b, 1, n, 1)  # (B, 1, n, n)
        return (nodes if edges is None else nodes & edges), mask


class HeteroMHGAConv(torch.nn.Module):
    r"""MHGA on a heterogeneous graph, with eq. 6's one softmax per target node.

    Takes PyG's heterogeneous form (``x_dict``, ``edge_index_dict`` keyed by
    ``(src_type, relation, dst_type)``, e.g. the ``HeteroData`` of
    :func:`csetgraph.graph.token_graph_pair` or a ``Batch`` of them) and computes eq. 5-7 on the
    union of all node types: the relation name of each edge type picks its strength, and each
    target node normalises its attention over **all** of its in-edges, whatever their relation
    and source node type:

    .. math::
        \alpha_{ij} = \frac{\exp(e_{ij})}
        {\sum_{(r, t)} \sum_{k \in \mathcal{N}_{r,t}(i)} \exp(e_{ik})}, \qquad
        e_{ij} = \mathrm{LeakyReLU}\big(\mathbf{a}_{src}^\top \mathbf{W} \mathbf{h}_j
                 + \mathbf{a}_{dst}^\top \mathbf{W} \mathbf{h}_i\big) \cdot \lambda_{r_{ij}}

    with :math:`\mathcal{N}_{r,t}(i)` the sources of node type :math:`t` linked to :math:`i` by
    relation :math:`r`. One :math:`\mathbf{W}` and one attention vector serve all node types
    (eq. 5 has a single ``W``), so the result equals :class:`MHGAConv` on
    ``csetgraph.graph.to_homogeneous(data)``: the same numbers, attention and gradients.

    This differs from ``HeteroConv({edge_type: MHGAConv(...)})`` and ``to_hetero``, which run
    one softmax per edge type and then sum (or average) the relations' outputs: there a
    target's attention sums to 1 within each relation, so the strength of a relation only
    acts as a temperature inside it and never shifts attention between relations.

    Args:
        in_channels: Feature width of every node type (``-1`` for lazy initialisation).
        out_channels, heads, concat, negative_slope, dropout, strengths, learn_strengths,
        bias: As in :class:`MHGAConv`; ``strengths[k]`` belongs to ``relations[k]``.
        relations: Relation names in code order (default the token graphs'
            ``("same", "adjacent", "distant")``); the middle entry of each edge type must be
            one of them.
        **kwargs: Passed to the inner :class:`MHGAConv`.

    Attributes:
        conv: The homogeneous :class:`MHGAConv` holding the parameters; its state dict is an
            ``MHGAConv``'s (``hetero.conv.load_state_dict(mhga.state_dict())``).

    Shapes:
        - **input:** ``x_dict[t]`` :math:`(|\mathcal{V}_t|, F_{in})`,
          ``edge_index_dict[(s, r, t)]`` :math:`(2, |\mathcal{E}_{s,r,t}|)` (row 0 sources
          of type ``s``, row 1 targets of type ``t``, indices local to each type).
        - **output:** a dict with ``(|\mathcal{V}_t|, H * F_{out})`` (or ``F_{out}`` if
          ``concat=False``) per node type of ``x_dict``; a node without in-edges gets the
          bias. With ``return_attention_weights=True`` also a dict
          ``{edge_type: (edge_index, alpha)}``, ``alpha`` :math:`(|\mathcal{E}_{s,r,t}|, H)`.
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
        relations: Sequence[str] = RELATIONS,
        **kwargs,
    ):
        super().__init__()
        if not isinstance(in_channels, int):
            raise TypeError(
                "HeteroMHGAConv shares one W across node types (eq. 5): in_channels must be "
                f"one int, got {in_channels!r}; project node types to one width first"
            )
        self.relations = tuple(relations)
        if len(set(self.relations)) != len(self.relations) or len(self.relations) != len(
            tuple(strengths)
        ):
            raise ValueError(
                f"relations {self.relations} must be distinct names, one per strength "
                f"({len(tuple(strengths))} given)"
            )
        self.conv = MHGAConv(
            in_channels,
            out_channels,
            heads=heads,
            concat=concat,
            negative_slope=negative_slope,
            dropout=dropout,
            strengths=strengths,
            learn_strengths=learn_strengths,
            bias=bias,
            **kwargs,
        )

    def reset_parameters(self) -> None:
        """Re-initialise the inner layer (see :meth:`MHGAConv.reset_parameters`)."""
        self.conv.reset_parameters()

    def forward(
        self,
        x_dict: Mapping[str, Tensor],
        edge_index_dict: Mapping[tuple[str, str, str], Tensor],
        return_attention_weights: bool = False,
    ):
        """Runs the layer on all node and edge types at once.

        Args:
            x_dict: Node features per node type (every type that an edge type names).
            edge_index_dict: ``(2, E)`` integer indices per edge type ``(src, relation, dst)``.
            return_attention_weights: Also return ``{edge_type: (edge_index, alpha)}``.
        """
        node_types = list(x_dict)
        counts = [x_dict[t].size(0) for t in node_types]
        offset = dict(zip(node_types, itertools.accumulate([0, *counts[:-1]]), strict=True))
        widths = {t: x_dict[t].shape[1:] for t in node_types}
        if len(set(widths.values())) > 1:
            raise ValueError(
                f"all node types need one feature width (W is shared, eq. 5), got {widths}; "
                "project them to one width first (e.g. a Linear per node type)"
            )
        edges, codes, edge_types = [], [], []
        for edge_type, edge_index in edge_index_dict.items():
            if not (isinstance(edge_type, tuple) and len(edge_type) == 3):
                raise ValueError(f"edge types are (src, relation, dst) triples, got {edge_type!r}")
            src, rel, dst = edge_type
            if rel not in self.relations:
                raise ValueError(
                    f"edge type {edge_type}: relation {rel!r} is not one of {self.relations} "
                    "(pass relations= with one name per strength)"
                )
            missing = [t for t in (src, dst) if t not in offset]
            if missing:
                raise ValueError(f"edge type {edge_type} needs features x_dict[{missing[0]!r}]")
            if not isinstance(edge_index, Tensor) or is_torch_sparse_tensor(edge_index):
                raise ValueError(
                    f"edge type {edge_type}: pass a dense (2, E) edge_index tensor (sparse "
                    f"adjacencies are taken by MHGAConv), got {type(edge_index).__name__}"
                )
            if isinstance(edge_index, EdgeIndex):
                edge_index = edge_index.as_tensor()
            if edge_index.dim() != 2 or edge_index.size(0) != 2:
                raise ValueError(
                    f"edge type {edge_type}: edge_index must be (2, E), got "
                    f"{tuple(edge_index.shape)}"
                )
            edge_index = edge_index.long()
            # Python-int offsets: no host-to-device copy, so no synchronisation on a GPU.
            edges.append(torch.stack([edge_index[0] + offset[src], edge_index[1] + offset[dst]]))
            codes.append(
                torch.full(
                    (edge_index.size(1),), self.relations.index(rel), device=edge_index.device
                )
            )
            edge_types.append(edge_type)

        x = torch.cat([x_dict[t] for t in node_types], dim=0)  # (sum n_t, C)
        if edges:
            edge_index, edge_type = torch.cat(edges, dim=1), torch.cat(codes)
        else:
            edge_index = torch.empty(2, 0, dtype=torch.long, device=x.device)
            edge_type = torch.empty(0, dtype=torch.long, device=x.device)
        out = self.conv(x, edge_index, edge_type, return_attention_weights)
        if return_attention_weights:
            out, (_, alpha) = out
        out_dict = dict(zip(node_types, out.split(counts), strict=True))
        if not return_attention_weights:
            return out_dict
        per_type = alpha.split([e.size(1) for e in edges]) if edges else ()
        alpha_dict = {
            et: (edge_index_dict[et], a) for et, a in zip(edge_types, per_type, strict=True)
        }
        return out_dict, alpha_dict

    def __repr__(self) -> str:
        conv = self.conv
        return (
            f"{self.__class__.__name__}({conv.in_channels}, {conv.out_channels}, "
            f"heads={conv.heads}, relations={self.relations}, "
            f"strengths={conv._initial_strengths})"
        )
