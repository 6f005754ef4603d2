"""The five bugs of issue 24, one test each (each failed on the layer before the fix).

Only ``MHGAConv`` and ``DenseMHGAConv`` are used here, so that the file also runs against the
old layer to show the failures.
"""

from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor

from csetgraph.graph import relation_matrix
from csetgraph.nn import DenseMHGAConv, MHGAConv

# GATConv's bipartite test shape (4 sources, 2 targets), with 5 edges given out of order.
BI_EDGES = torch.tensor([[3, 0, 2, 1, 1], [1, 0, 1, 0, 1]])
BI_TYPES = torch.tensor([2, 0, 1, 1, 0])


def test_bug1_sparse_adjacency_with_two_target_rows(loop_mhga):
    torch.manual_seed(10)
    x_src = torch.randn(4, 6, dtype=torch.float64)
    x_dst = torch.randn(2, 6, dtype=torch.float64)
    conv = MHGAConv(6, 3, heads=2).double()
    torch.nn.init.normal_(conv.bias)
    expected = loop_mhga(conv, x_src, BI_EDGES, BI_TYPES, x_dst)

    # PyG's idiom (GATConv's tests): adj_t = to_torch_csc_tensor(edge_index, size).t(), here
    # with the codes as its values, so that they are sorted together with the entries.
    adj_t = to_torch_csc_tensor(BI_EDGES, BI_TYPES, size=(4, 2)).t()  # (2, 4) CSR
    assert adj_t.size() == (2, 4)
    coo = to_torch_coo_tensor(BI_EDGES.flip(0), BI_TYPES, size=(2, 4))  # coalesced
    for adj in (adj_t, coo):
        # codes as values (RGCNConv's form), and as edge_type in stored order (RGATConv's)
        assert torch.allclose(conv((x_src, x_dst), adj), expected, atol=1e-10)
        assert torch.allclose(conv((x_src, x_dst), adj, adj.values()), expected, atol=1e-10)
    # An uncoalesced COO keeps the caller's order: the caller's edge_type then lines up.
    raw = torch.sparse_coo_tensor(BI_EDGES.flip(0), torch.ones(5), (2, 4))
    assert torch.allclose(conv((x_src, x_dst), raw, BI_TYPES), expected, atol=1e-10)

    # Four codes match n_src = 4, not the 5 stored entries: refused, not misread.
    with pytest.raises(ValueError, match=r"stored entry of the adjacency \(5,\)"):
        conv((x_src, x_dst), raw, BI_TYPES[:4])
    # Float values are no relation codes.
    with pytest.raises(ValueError, match="integer"):
        conv((x_src, x_dst), raw)


def test_bug2_x_dst_none_returns_one_row_per_target(loop_mhga):
    torch.manual_seed(11)
    x_src = torch.randn(4, 6, dtype=torch.float64)
    conv = MHGAConv(6, 3, heads=2).double()
    torch.nn.init.normal_(conv.bias)
    # Three targets, the last without any in-edge (so the edges alone do not tell n_dst).
    out = conv((x_src, None), BI_EDGES, BI_TYPES, size=(4, 3))
    assert out.shape == (3, 6)
    assert torch.allclose(out, loop_mhga(conv, x_src, BI_EDGES, BI_TYPES, num_dst=3), atol=1e-10)
    assert torch.equal(out[2], conv.bias)
    # Without size the number of targets is unknown: a clear error, not n_src rows.
    with pytest.raises(ValueError, match=r"size=\(n_src, n_dst\)"):
        conv((x_src, None), BI_EDGES, BI_TYPES)


def test_bug3_square_edge_mask_is_not_a_node_mask_when_batch_equals_n():
    torch.manual_seed(12)
    dense = DenseMHGAConv(4, 3, heads=2)
    torch.nn.init.normal_(dense.bias)
    rel = relation_matrix(2, 2, paired=False)  # n = 5
    edges = torch.rand(5, 5) > 0.4
    edges.fill_diagonal_(True)
    x = torch.randn(5, 5, 4)  # B == n == 5
    out = dense(x, rel, edge_mask=edges)
    # Reference: MHGAConv on each graph's edge list (no batch at all).
    sparse = MHGAConv(4, 3, heads=2)
    sparse.load_state_dict(dense.state_dict())
    dst, src = edges.nonzero(as_tuple=True)
    edge_index, edge_type = torch.stack([src, dst]), rel[dst, src]
    for b in range(5):
        assert torch.allclose(out[b], sparse(x[b], edge_index, edge_type), atol=1e-6)
    # A square mask passed as `mask` is a (B, n) node mask now, whatever B: the same numbers
    # as dropping the invalid nodes (here B = n again).
    nodes = torch.ones(5, 5, dtype=torch.bool)
    nodes[0, 3:] = False
    out = dense(x, rel, nodes)
    assert torch.allclose(out[0, :3], dense(x[:1, :3], rel[:3, :3])[0], atol=1e-6)
    assert torch.all(out[0, 3:] == 0)
    with pytest.raises(ValueError, match="edge_mask"):
        dense(x, rel, edges.expand(5, 5, 5))


def test_bug4_repr_works_on_the_meta_device():
    with torch.device("meta"):
        conv = MHGAConv(8, 16, heads=2, learn_strengths=True)
        dense = DenseMHGAConv(8, 16, heads=2, strengths=(1.0, 0.5))
    assert conv.strengths.is_meta
    assert repr(conv) == "MHGAConv(8, 16, heads=2, strengths=(1.0, 0.7, 0.3))"
    assert repr(dense) == "DenseMHGAConv(8, 16, heads=2, strengths=(1.0, 0.5))"


@pytest.mark.parametrize("code", [-1, 3])
def test_bug5_out_of_range_relation_codes_are_refused(code):
    conv = MHGAConv(4, 2)
    x = torch.randn(4, 4)
    edge_type = torch.tensor([code, 0, 1, 0])
    with pytest.raises(ValueError, match=rf"relation codes \[{code}\] outside 0\.\.2"):
        conv(x, BI_EDGES[:, :4], edge_type)
    dense = DenseMHGAConv(4, 2)
    rel = torch.zeros(4, 4, dtype=torch.long)
    rel[1, 2] = code
    with pytest.raises(ValueError, match=rf"relation codes \[{code}\] outside 0\.\.2"):
        dense(x.unsqueeze(0), rel)
