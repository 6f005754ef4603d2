"""Token graphs of ViT feature maps: relations by token position, as PyG graphs.

A ViT turns an image of ``h x w`` patches into ``N = 1 + h * w`` tokens: the class token at
position 0, then the patches in row-major order (patch ``(r, c)`` at position
``1 + r * w + c``). CSET's MHGA (paper eq. 4-7) treats the tokens of an image pair as the nodes
of a complete graph whose edges carry one of three relations, decided by the two tokens'
positions *within their own images* (so a visible and an infrared token at the same index are
``same``):

* ``same`` (code 0): ``pos(i) == pos(j)``, a node's own self loop included;
* ``adjacent`` (code 1): ``|pos(i) - pos(j)| == 1`` in the token sequence, the paper's rule.
  With ``adjacency="grid"`` two patches are adjacent when they are 4-neighbours on the
  ``h x w`` patch grid instead, and the class token is adjacent to nothing;
* ``distant`` (code 2): every other pair.

Everything here is parameter free. Node order in the homogeneous and dense forms of a pair
graph is: the ``N`` visible tokens, then the ``N`` infrared tokens.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data, HeteroData

from csetgraph.modalities import MODALITIES

#: Edge type codes, in the order used by ``MHGAConv.strengths``.
SAME, ADJACENT, DISTANT = 0, 1, 2
#: Relation names indexed by their code.
RELATIONS: tuple[str, str, str] = ("same", "adjacent", "distant")
#: Node types of a pair graph, in the order of the homogeneous and dense forms.
NODE_TYPES: tuple[str, ...] = MODALITIES  # the node types are the two modalities
_ADJACENCIES = ("sequence", "grid")


def _check_layout(h: int, w: int, adjacency: str) -> None:
    if not (isinstance(h, int) and isinstance(w, int)) or h < 1 or w < 1:
        raise ValueError(f"the patch grid must be positive integers h x w, got h={h!r}, w={w!r}")
    if adjacency not in _ADJACENCIES:
        raise ValueError(
            f"adjacency must be one of {_ADJACENCIES} ('sequence' is the paper's rule "
            f"|pos(i) - pos(j)| == 1, 'grid' the 4-neighbourhood of the patch grid), "
            f"got {adjacency!r}"
        )


def num_tokens(h: int, w: int) -> int:
    """Number of tokens ``N = 1 + h * w`` of one image (class token plus patches)."""
    return 1 + h * w


def token_positions(h: int, w: int) -> Tensor:
    """Token positions ``0 .. N-1`` of one image (0 is the class token).

    Shapes:
        output: ``(N,)`` long.
    """
    return torch.arange(num_tokens(h, w))


def grid_coords(h: int, w: int) -> Tensor:
    """Patch-grid coordinates ``(row, col)`` of every token; the class token gets ``(-1, -1)``.

    Shapes:
        output: ``(N, 2)`` long.
    """
    patch = torch.arange(h * w)
    coords = torch.stack([patch // w, patch % w], dim=1)  # (h*w, 2)
    return torch.cat([torch.full((1, 2), -1, dtype=torch.long), coords], dim=0)  # (N, 2)


def token_relation(
    pos_i: Tensor, pos_j: Tensor, *, grid_width: int | None = None, adjacency: str = "sequence"
) -> Tensor:
    """Relation codes of token pairs from their positions (broadcasting elementwise).

    Args:
        pos_i: Positions of the first tokens (0 = class token, ``1 + r * w + c`` = patch).
        pos_j: Positions of the second tokens, broadcastable against ``pos_i``.
        grid_width: Width ``w`` of the patch grid; required when ``adjacency="grid"``.
        adjacency: ``"sequence"`` (``|pos_i - pos_j| == 1``, the paper) or ``"grid"``
            (4-neighbours on the patch grid; the class token is adjacent to nothing).

    Returns:
        Long tensor of codes ``0 = same``, ``1 = adjacent``, ``2 = distant``.
    """
    if adjacency not in _ADJACENCIES:
        raise ValueError(f"adjacency must be one of {_ADJACENCIES}, got {adjacency!r}")
    pos_i, pos_j = torch.broadcast_tensors(pos_i.long(), pos_j.long())
    same = pos_i == pos_j
    if adjacency == "sequence":
        adjacent = (pos_i - pos_j).abs() == 1
    else:
        if grid_width is None or grid_width < 1:
            raise ValueError("adjacency='grid' needs grid_width, the number of patch columns w")
        # Patch k = pos - 1 sits at (k // w, k % w); the class token (pos 0) has no grid cell.
        k_i, k_j = pos_i - 1, pos_j - 1
        manhattan = (
            k_i.div(grid_width, rounding_mode="floor") - k_j.div(grid_width, rounding_mode="floor")
        ).abs() + (k_i.remainder(grid_width) - k_j.remainder(grid_width)).abs()
        adjacent = (manhattan == 1) & (pos_i > 0) & (pos_j > 0)
    codes = torch.full_like(pos_i, DISTANT)
    codes = torch.where(adjacent, torch.full_like(codes, ADJACENT), codes)
    return torch.where(same, torch.full_like(codes, SAME), codes)


@functools.lru_cache(maxsize=32)
def _relation_matrix_cached(h: int, w: int, adjacency: str, paired: bool) -> Tensor:
    pos = token_positions(h, w)
    if paired:
        pos = torch.cat([pos, pos])  # vis tokens, then ir tokens: same index -> same position
    return token_relation(pos.view(-1, 1), pos.view(1, -1), grid_width=w, adjacency=adjacency)


def relation_matrix(h: int, w: int, *, adjacency: str = "sequence", paired: bool = True) -> Tensor:
    """Dense relation codes of the complete token graph, computed once per token layout.

    Entry ``[i, j]`` is the relation of target node ``i`` and source node ``j`` (the matrix is
    symmetric). With ``paired=True`` the nodes are the ``N`` visible tokens followed by the
    ``N`` infrared tokens; otherwise the ``N`` tokens of one image. The result is cached per
    ``(h, w, adjacency, paired)`` on the CPU; a fresh copy is returned each call, so move it
    with ``.to(device)`` and modify it freely.

    Shapes:
        output: ``(2N, 2N)`` (paired) or ``(N, N)`` long codes in ``{0, 1, 2}``.
    """
    _check_layout(h, w, adjacency)
    return _relation_matrix_cached(h, w, adjacency, bool(paired)).clone()


def complete_token_graph(
    h: int, w: int, *, adjacency: str = "sequence", paired: bool = True
) -> tuple[Tensor, Tensor]:
    """Homogeneous ``(edge_index, edge_type)`` of the complete token graph (self loops included).

    Node order as in :func:`relation_matrix`. ``edge_index[0]`` holds sources, ``edge_index[1]``
    targets (PyG's ``source_to_target`` flow); edges are sorted by target.

    Shapes:
        output: ``edge_index (2, n * n)``, ``edge_type (n * n,)`` with ``n = 2N`` or ``N``.
    """
    rel = relation_matrix(h, w, adjacency=adjacency, paired=paired)
    n = rel.size(0)
    dst = torch.arange(n).repeat_interleave(n)
    src = torch.arange(n).repeat(n)
    return torch.stack([src, dst]), rel.reshape(-1)


def local_token_graph(
    h: int, w: int, *, adjacency: str = "sequence", paired: bool = True
) -> tuple[Tensor, Tensor]:
    """The ``same`` and ``adjacent`` edges of :func:`complete_token_graph` (no ``distant`` ones).

    MHGA's ``graph="local"`` reading: each token attends only to its own position (in both
    images of a pair) and its neighbours, a sparse graph of ``O(n)`` edges.

    Shapes:
        output: ``edge_index (2, E)``, ``edge_type (E,)`` codes in ``{0, 1}``.
    """
    edge_index, edge_type = complete_token_graph(h, w, adjacency=adjacency, paired=paired)
    keep = edge_type != DISTANT
    return edge_index[:, keep], edge_type[keep]


def batch_token_graphs(
    edge_index: Tensor, edge_type: Tensor, num_nodes: int, batch_size: int
) -> tuple[Tensor, Tensor]:
    """``batch_size`` copies of one graph as a single disjoint graph, as PyG's ``Batch`` does.

    Graph ``b`` owns nodes ``b * num_nodes ... (b + 1) * num_nodes - 1``, so node features laid
    out ``(B, n, C)`` and flattened to ``(B * n, C)`` line up with the edges. Pure tensor
    arithmetic on the device of ``edge_index``: no Python loop over graphs and no host
    synchronisation, so it can run inside a compiled forward.

    Shapes:
        edge_index ``(2, E)``, edge_type ``(E,)`` -> ``(2, B * E)``, ``(B * E,)``; graph-major
        (all of graph 0's edges first).
    """
    E = edge_index.size(1)
    offsets = torch.arange(batch_size, device=edge_index.device) * num_nodes  # (B,)
    batched = edge_index.unsqueeze(1) + offsets.view(1, batch_size, 1)  # (2, B, E)
    return batched.reshape(2, batch_size * E), edge_type.repeat(batch_size)


def _add_typed_edges(
    data: HeteroData, rel: Tensor, src_type: str, dst_type: str, src_off: int, dst_off: int, n: int
) -> None:
    block = rel[dst_off : dst_off + n, src_off : src_off + n]  # (N, N): rows targets, cols sources
    for code, name in enumerate(RELATIONS):
        dst, src = (block == code).nonzero(as_tuple=True)
        data[src_type, name, dst_type].edge_index = torch.stack([src, dst])


def _node_features(x: Tensor | None, n: int, name: str) -> Tensor | None:
    if x is None:
        return None
    if x.dim() != 2 or x.size(0) != n:
        raise ValueError(
            f"{name} must hold one feature row per token, shape (N={n}, d); got {tuple(x.shape)}"
        )
    return x


def token_graph_pair(
    x_vis: Tensor | None = None,
    x_ir: Tensor | None = None,
    *,
    h: int,
    w: int,
    adjacency: str = "sequence",
) -> HeteroData:
    """Complete token graph of one visible-infrared image pair as ``HeteroData``.

    Node types ``vis`` and ``ir`` carry ``x`` (when given), ``pos`` (token index within its own
    image) and ``grid`` (patch row and column, ``(-1, -1)`` for the class token). Edge types
    are ``(src, relation, dst)`` for ``src, dst`` in ``vis, ir`` and ``relation`` in ``same,
    adjacent, distant``: 12 edge types that together form the complete graph on ``2N`` nodes,
    self loops included (under ``same``).

    Args:
        x_vis: Visible token features, or ``None`` for a feature-less graph.
        x_ir: Infrared token features, or ``None``.
        h: Patch grid height.
        w: Patch grid width.
        adjacency: ``"sequence"`` (the paper) or ``"grid"``; see :func:`token_relation`.

    Shapes:
        x_vis, x_ir: ``(N, d)`` with ``N = 1 + h * w``.
    """
    _check_layout(h, w, adjacency)
    n = num_tokens(h, w)
    rel = _relation_matrix_cached(h, w, adjacency, True)
    data = HeteroData()
    for node_type, x in zip(NODE_TYPES, (x_vis, x_ir), strict=True):
        x = _node_features(x, n, f"x_{node_type}")
        if x is not None:
            data[node_type].x = x
        else:
            data[node_type].num_nodes = n
        data[node_type].pos = token_positions(h, w)
        data[node_type].grid = grid_coords(h, w)
    for s, src_type in enumerate(NODE_TYPES):
        for d, dst_type in enumerate(NODE_TYPES):
            _add_typed_edges(data, rel, src_type, dst_type, s * n, d * n, n)
    return data


def token_graph_single(
    x: Tensor | None = None,
    *,
    h: int,
    w: int,
    modality: str = "vis",
    adjacency: str = "sequence",
) -> HeteroData:
    """Complete token graph of a single image (inference: a query has no partner).

    One node type (``modality``) with ``x``, ``pos`` and ``grid``, and the three edge types
    ``(modality, relation, modality)``.

    Shapes:
        x: ``(N, d)`` with ``N = 1 + h * w``.
    """
    _check_layout(h, w, adjacency)
    if modality not in NODE_TYPES:
        raise ValueError(f"modality must be one of {NODE_TYPES}, got {modality!r}")
    n = num_tokens(h, w)
    rel = _relation_matrix_cached(h, w, adjacency, False)
    data = HeteroData()
    x = _node_features(x, n, "x")
    if x is not None:
        data[modality].x = x
    else:
        data[modality].num_nodes = n
    data[modality].pos = token_positions(h, w)
    data[modality].grid = grid_coords(h, w)
    _add_typed_edges(data, rel, modality, modality, 0, 0, n)
    return data


def token_graph_batch(
    x_vis: Tensor, x_ir: Tensor, *, h: int, w: int, adjacency: str = "sequence"
) -> Batch:
    """A ``Batch`` of the pair graphs of ``B`` pairs (PyG offsets the node indices).

    Shapes:
        x_vis, x_ir: ``(B, N, d)``.
    """
    if x_vis.dim() != 3 or x_vis.shape != x_ir.shape:
        raise ValueError(
            "x_vis and x_ir must both be (B, N, d) with the same shape, got "
            f"{tuple(x_vis.shape)} and {tuple(x_ir.shape)}"
        )
    graphs = [
        token_graph_pair(xv, xi, h=h, w=w, adjacency=adjacency)
        for xv, xi in zip(x_vis, x_ir, strict=True)
    ]
    return Batch.from_data_list(graphs)


def to_homogeneous(data: HeteroData) -> Data:
    """Homogeneous form of a token graph, via PyG's ``HeteroData.to_homogeneous``.

    PyG numbers edge types by their order in the graph (``0 .. 11`` for a pair graph) and
    node types likewise. Here ``edge_type`` is remapped to the relation codes
    ``0 = same, 1 = adjacent, 2 = distant`` that ``MHGAConv`` expects; PyG's own id is kept as
    ``hetero_edge_type`` and the names as ``_edge_type_names``. Nodes are ordered by node type
    (all ``vis`` nodes, then all ``ir`` nodes; for a ``Batch`` that means all pairs' ``vis``
    nodes first).

    Shapes:
        output: ``x (n, d)``, ``edge_index (2, E)``, ``edge_type (E,)``, ``node_type (n,)``.
    """
    out = data.to_homogeneous()
    names = out._edge_type_names
    unknown = [name for name in names if name[1] not in RELATIONS]
    if unknown:
        raise ValueError(f"edge types {unknown} are not token relations {RELATIONS}")
    # PyG's edge type id k refers to names[k]; look up the relation code of each.
    code_of_type = torch.tensor([RELATIONS.index(name[1]) for name in names], dtype=torch.long)
    out.hetero_edge_type = out.edge_type
    out.edge_type = code_of_type.to(out.edge_type.device)[out.edge_type]
    return out
