"""The inputs PyG users pass to a conv layer: ``size=``, sparse adjacencies, ``EdgeIndex``.

Each is checked against ``MHGAConv`` on the equivalent plain ``edge_index`` graph: values,
attention weights and gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch_geometric import EdgeIndex

from csetgraph.nn import MHGAConv

# 5 nodes, 11 distinct edges in no particular order, every relation, node 4 without in-edges.
EDGE_INDEX = torch.tensor([[2, 0, 1, 3, 0, 4, 1, 2, 3, 4, 0], [1, 0, 2, 3, 1, 0, 1, 0, 2, 3, 3]])
EDGE_TYPE = torch.tensor([1, 0, 2, 0, 2, 1, 0, 2, 1, 2, 0])
LAYOUTS = ("coo", "coo_uncoalesced", "csr", "csc")


def _conv_and_copy(seed: int, **kwargs) -> tuple[MHGAConv, MHGAConv]:
    torch.manual_seed(seed)
    conv = MHGAConv(6, 3, heads=2, learn_strengths=True, **kwargs).double()
    torch.nn.init.normal_(conv.bias)
    twin = MHGAConv(6, 3, heads=2, learn_strengths=True, **kwargs).double()
    twin.load_state_dict(conv.state_dict())
    return conv, twin


def _adjacency(layout: str, n_dst: int, n_src: int, values=EDGE_TYPE) -> torch.Tensor:
    """``adj_t`` ``[target, source]``, by default with the relation codes as values."""
    coo = torch.sparse_coo_tensor(EDGE_INDEX.flip(0), values, (n_dst, n_src))
    if layout == "coo_uncoalesced":
        return coo  # stored in the caller's order
    coo = coo.coalesce()
    return {"coo": coo, "csr": coo.to_sparse_csr(), "csc": coo.to_sparse_csc()}[layout]


def _stored_values(adj: torch.Tensor) -> torch.Tensor:
    """Values in stored order (``values()`` refuses an uncoalesced COO)."""
    return adj._values() if adj.layout == torch.sparse_coo else adj.values()


def _dense_alpha(edge_index, alpha, n_dst, n_src):
    """Per-edge attention as a dense ``(n_dst, n_src, H)`` tensor (edges are distinct)."""
    out = alpha.new_zeros(n_dst, n_src, alpha.size(1))
    out[edge_index[1], edge_index[0]] = alpha
    return out


def _assert_same_grads(a: MHGAConv, b: MHGAConv) -> None:
    """Equal gradients; a parameter the graph does not use (``att_dst`` for ``(x, None)``) has
    none on one side and exactly zero on the other."""
    for (name, p_a), (_, p_b) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        g_a = torch.zeros_like(p_a) if p_a.grad is None else p_a.grad
        g_b = torch.zeros_like(p_b) if p_b.grad is None else p_b.grad
        assert torch.allclose(g_a, g_b, atol=1e-10), name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sparse_adjacency_equals_edge_index(layout):
    assert LAYOUTS
    conv, ref = _conv_and_copy(20)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    adj_t = _adjacency(layout, 5, 5)

    out, (adj_alpha, alpha) = conv(x, adj_t, return_attention_weights=True)
    out_ref, (_, alpha_ref) = ref(x_ref, EDGE_INDEX, EDGE_TYPE, return_attention_weights=True)
    assert torch.allclose(out, out_ref, atol=1e-10)
    # The attention comes back as GATConv returns it: the adjacency (same layout, same stored
    # order) with alpha as values, and alpha itself in that order.
    assert adj_alpha.layout == adj_t.layout and adj_alpha.shape == (5, 5, 2)
    assert torch.equal(_stored_values(adj_alpha), alpha)
    expected = _dense_alpha(EDGE_INDEX, alpha_ref, 5, 5)
    assert torch.allclose(adj_alpha.to_dense(), expected, atol=1e-10)

    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-10)
    _assert_same_grads(conv, ref)

    # The same with edge_type passed separately, in the adjacency's stored order (RGATConv).
    ones = _adjacency(layout, 5, 5, values=torch.ones(EDGE_TYPE.numel()))
    assert torch.allclose(conv(x, ones, _stored_values(adj_t)), out, atol=1e-10)


def test_bipartite_sparse_adjacency_and_size():
    conv, ref = _conv_and_copy(21)
    x_src = torch.randn(5, 6, dtype=torch.float64)
    x_dst = torch.randn(4, 6, dtype=torch.float64)
    adj_t = _adjacency("csr", 4, 5)  # targets 0..3 only
    keep = EDGE_INDEX[1] < 4
    ei, et = EDGE_INDEX[:, keep], EDGE_TYPE[keep]
    out = conv((x_src, x_dst), _adjacency("csr", 4, 5))
    assert torch.allclose(out, ref((x_src, x_dst), ei, et), atol=1e-10)
    # The adjacency carries (n_dst, n_src), so (x_src, None) needs no size.
    assert conv((x_src, None), adj_t).shape == (4, 6)
    with pytest.raises(ValueError, match="disagrees with the adjacency"):
        conv((x_src, x_dst), adj_t, size=(4, 5))


def test_size_with_x_dst_none_equals_homogeneous_graph():
    # (x_src, None) has no target term in the logits. The equivalent homogeneous graph: the
    # sources plus n_dst zero-feature nodes (W 0 = 0, so their target term vanishes), with the
    # edges moved onto them.
    conv, ref = _conv_and_copy(22)
    n_src, n_dst = 5, 6  # target 5 has no in-edge
    x_src = torch.randn(n_src, 6, dtype=torch.float64, requires_grad=True)
    x_ref = x_src.detach().clone().requires_grad_()
    out, (_, alpha) = conv(
        (x_src, None), EDGE_INDEX, EDGE_TYPE, size=(n_src, n_dst), return_attention_weights=True
    )
    homo_x = torch.cat([x_ref, torch.zeros(n_dst, 6, dtype=torch.float64)])
    homo_ei = EDGE_INDEX + torch.tensor([[0], [n_src]])
    out_ref, (_, alpha_ref) = ref(homo_x, homo_ei, EDGE_TYPE, return_attention_weights=True)
    assert out.shape == (n_dst, 6)
    assert torch.allclose(out, out_ref[n_src:], atol=1e-10)
    assert torch.allclose(alpha, alpha_ref, atol=1e-10)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref[n_src:].backward(grad)
    assert torch.allclose(x_src.grad, x_ref.grad, atol=1e-10)
    _assert_same_grads(conv, ref)


def test_size_is_checked_and_keyword_only():
    conv = MHGAConv(6, 3)
    x = torch.randn(5, 6)
    plain = conv(x, EDGE_INDEX, EDGE_TYPE)
    assert torch.equal(conv((x, x), EDGE_INDEX, EDGE_TYPE, size=(5, 5)), plain)
    with pytest.raises(ValueError):  # PyG's own check: 5 target rows, size says 7
        conv((x, x), EDGE_INDEX, EDGE_TYPE, size=(5, 7))
    with pytest.raises(TypeError, match="keyword-only"):
        conv(x, EDGE_INDEX, EDGE_TYPE, (5, 5))


def test_edge_index_with_sparse_size_needs_no_size():
    conv, ref = _conv_and_copy(23)
    x_src = torch.randn(5, 6, dtype=torch.float64)
    edge_index = EdgeIndex(EDGE_INDEX, sparse_size=(5, 6))
    out = conv((x_src, None), edge_index, EDGE_TYPE)
    assert torch.allclose(out, ref((x_src, None), EDGE_INDEX, EDGE_TYPE, size=(5, 6)))


def test_torch_sparse_tensor_equals_edge_index():
    torch_sparse = pytest.importorskip(
        "torch_sparse",
        reason="torch_sparse is not installed (optional; PyPI has no wheel for this torch)",
    )
    conv, ref = _conv_and_copy(24)
    x = torch.randn(5, 6, dtype=torch.float64)
    adj_t = torch_sparse.SparseTensor(
        row=EDGE_INDEX[1], col=EDGE_INDEX[0], value=EDGE_TYPE, sparse_sizes=(5, 5)
    )  # sorts its entries, values with them
    out, adj_alpha = conv(x, adj_t, return_attention_weights=True)
    out_ref, (_, alpha_ref) = ref(x, EDGE_INDEX, EDGE_TYPE, return_attention_weights=True)
    assert torch.allclose(out, out_ref, atol=1e-10)
    assert torch.allclose(adj_alpha.to_dense(), _dense_alpha(EDGE_INDEX, alpha_ref, 5, 5))
    assert torch.allclose(conv(x, adj_t, adj_t.storage.value()), out, atol=1e-10)


def test_codes_checked_inside_a_compiled_graph():
    conv = MHGAConv(6, 3)
    compiled = torch.compile(conv, fullgraph=True, backend="eager")  # no graph break
    x = torch.randn(5, 6)
    assert torch.allclose(compiled(x, EDGE_INDEX, EDGE_TYPE), conv(x, EDGE_INDEX, EDGE_TYPE))
    with pytest.raises(RuntimeError, match=r"outside 0\.\.2"):
        compiled(x, EDGE_INDEX, EDGE_TYPE - 1)


def test_int32_indices_and_codes():
    conv, _ = _conv_and_copy(25)
    x = torch.randn(5, 6, dtype=torch.float64)
    expected = conv(x, EDGE_INDEX, EDGE_TYPE)
    assert torch.allclose(conv(x, EDGE_INDEX.int(), EDGE_TYPE.int()), expected, atol=1e-12)
    csr = _adjacency("csr", 5, 5)
    csr32 = torch.sparse_csr_tensor(
        csr.crow_indices().int(), csr.col_indices().int(), csr.values().int(), (5, 5)
    )
    assert torch.allclose(conv(x, csr32), expected, atol=1e-12)


def test_gradcheck_through_the_sparse_adjacency():
    conv, _ = _conv_and_copy(26)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    adj_t = _adjacency("csr", 5, 5)
    assert torch.autograd.gradcheck(lambda x: conv(x, adj_t), (x,))
    assert torch.autograd.gradcheck(
        lambda x: conv((x, None), EDGE_INDEX, EDGE_TYPE, size=(5, 6)), (x,)
    )
