"""MHGAConv and DenseMHGAConv in PyG's test style: tiny graphs, references written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv

from csetgraph.graph import complete_token_graph, relation_matrix
from csetgraph.nn import DenseMHGAConv, MHGAConv

# A 4-node graph with every relation, a self loop per node and one node (3) with one in-edge.
EDGE_INDEX = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 2, 1], [0, 0, 0, 1, 1, 2, 3, 1, 2]])
EDGE_TYPE = torch.tensor([0, 1, 2, 1, 0, 0, 0, 2, 1])


def dense_reference(x, rel, conv):
    """Dense eq. 4-7 for one complete graph with einsum (independent of the layers' code)."""
    n = x.size(0)
    wh = conv.lin(x).view(n, conv.heads, conv.out_channels)
    src = torch.einsum("nhc,hc->hn", wh, conv.att_src[0])
    dst = torch.einsum("nhc,hc->hn", wh, conv.att_dst[0])
    e = F.leaky_relu(dst[:, :, None] + src[:, None, :], conv.negative_slope) * conv.strengths[rel]
    out = torch.einsum("hij,jhc->ihc", e.softmax(-1), wh)
    return out.reshape(n, -1) + conv.bias


def test_shapes_and_repr():
    x = torch.randn(4, 8)
    conv = MHGAConv(8, 16, heads=2)
    assert repr(conv) == "MHGAConv(8, 16, heads=2, strengths=(1.0, 0.7, 0.3))"
    assert conv(x, EDGE_INDEX, EDGE_TYPE).shape == (4, 32)
    conv = MHGAConv(8, 16, heads=2, concat=False)
    assert conv(x, EDGE_INDEX, EDGE_TYPE).shape == (4, 16)
    dense = DenseMHGAConv(8, 16, heads=2)
    assert repr(dense) == "DenseMHGAConv(8, 16, heads=2, strengths=(1.0, 0.7, 0.3))"
    assert dense(torch.randn(3, 5, 8), relation_matrix(2, 2, paired=False)).shape == (3, 5, 32)
    names = {name for name, _ in conv.named_parameters()}
    assert names == {"lin.weight", "att_src", "att_dst", "bias"}
    assert conv.att_src.shape == (1, 2, 16) and conv.att_dst.shape == (1, 2, 16)
    assert set(conv.state_dict()) == set(dense.state_dict()) == names | {"strengths"}


def test_learnable_strengths_are_a_parameter():
    conv = MHGAConv(4, 4, learn_strengths=True, strengths=(1.0, 0.5))
    assert "strengths" in dict(conv.named_parameters())
    out = conv(torch.randn(4, 4), EDGE_INDEX, EDGE_TYPE.clamp(max=1))
    out.sum().backward()
    assert conv.strengths.grad is not None and conv.strengths.grad.abs().sum() > 0
    with torch.no_grad():
        conv.strengths.fill_(3.0)
    conv.reset_parameters()
    assert conv.strengths.tolist() == [1.0, 0.5]


@pytest.mark.parametrize("concat", [True, False])
def test_matches_loop_reference(concat, loop_mhga):
    torch.manual_seed(0)
    conv = MHGAConv(6, 3, heads=2, concat=concat).double()
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(4, 6, dtype=torch.float64)
    out, (ei, alpha) = conv(x, EDGE_INDEX, EDGE_TYPE, return_attention_weights=True)
    assert torch.allclose(out, loop_mhga(conv, x, EDGE_INDEX, EDGE_TYPE), atol=1e-10)
    assert ei is EDGE_INDEX and alpha.shape == (EDGE_INDEX.size(1), 2)


def test_attention_sums_to_one_per_target():
    conv = MHGAConv(5, 4, heads=3)
    _, (edge_index, alpha) = conv(torch.randn(4, 5), EDGE_INDEX, EDGE_TYPE, True)
    sums = torch.zeros(4, 3).index_add_(0, edge_index[1], alpha)
    assert torch.allclose(sums, torch.ones(4, 3), atol=1e-6)


def test_strength_multiplies_after_activation():
    # LeakyReLU is positively homogeneous, so the order only shows with a negative strength
    # (possible once strengths are learned). One target with a `same` and a `distant` in-edge
    # and raw logit -2: after the activation l = -0.4, so the logits are l * 1.0 and l * -0.5.
    conv = MHGAConv(1, 1, negative_slope=0.2, bias=False, strengths=(1.0, 0.7, -0.5))
    with torch.no_grad():
        conv.lin.weight.fill_(1.0)
        conv.att_src.fill_(1.0)
        conv.att_dst.fill_(1.0)
    x = torch.tensor([[-1.0], [-1.0]])
    edge_index = torch.tensor([[0, 1], [0, 0]])
    _, (_, alpha) = conv(x, edge_index, torch.tensor([0, 2]), return_attention_weights=True)
    expected = torch.softmax(torch.tensor([-0.4 * 1.0, -0.4 * -0.5]), 0)
    assert torch.allclose(alpha[:, 0], expected)
    dense = DenseMHGAConv(1, 1, negative_slope=0.2, bias=False, strengths=(1.0, 0.7, -0.5))
    dense.load_state_dict(conv.state_dict())
    _, dense_alpha = dense(x, torch.tensor([[0, 2], [2, 0]]), return_attention_weights=True)
    assert torch.allclose(dense_alpha[0, 0, 0], expected)


def test_bipartite(loop_mhga):
    torch.manual_seed(1)
    x_src, x_dst = torch.randn(4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 3, 2, 0], [0, 0, 1, 2, 2]])
    edge_type = torch.tensor([0, 1, 2, 2, 1])
    conv = MHGAConv(6, 4, heads=2).double()
    out = conv((x_src, x_dst), edge_index, edge_type)
    assert out.shape == (3, 8)
    # Reference: the loop on the shared weight, with target features taken from x_dst.
    assert torch.allclose(out, loop_mhga(conv, x_src, edge_index, edge_type, x_dst), atol=1e-10)
    # Separate source/target weights, like GATConv with in_channels=(src, dst).
    conv = MHGAConv((6, 5), 4, heads=2).double()
    x_dst5 = torch.randn(3, 5, dtype=torch.float64)
    out = conv((x_src, x_dst5), edge_index, edge_type)
    assert out.shape == (3, 8)
    assert torch.allclose(out, loop_mhga(conv, x_src, edge_index, edge_type, x_dst5), atol=1e-10)


def test_strengths_one_equals_gatconv():
    torch.manual_seed(2)
    conv = MHGAConv(6, 4, heads=3, strengths=(1.0, 1.0, 1.0))
    gat = GATConv(6, 4, heads=3, add_self_loops=False)
    result = gat.load_state_dict(conv.state_dict(), strict=False)  # GAT has no strengths
    assert result.missing_keys == [] and result.unexpected_keys == ["strengths"]
    torch.nn.init.normal_(conv.bias)
    with torch.no_grad():
        gat.bias.copy_(conv.bias)
    x = torch.randn(4, 6)
    out, (_, alpha) = conv(x, EDGE_INDEX, EDGE_TYPE, return_attention_weights=True)
    gat_out, (_, gat_alpha) = gat(x, EDGE_INDEX, return_attention_weights=True)
    assert torch.allclose(out, gat_out, atol=1e-6)
    assert torch.allclose(alpha, gat_alpha, atol=1e-6)


def test_empty_graphs():
    conv = MHGAConv(4, 3, heads=2)
    torch.nn.init.normal_(conv.bias)
    empty_edges = torch.empty(2, 0, dtype=torch.long)
    empty_types = torch.empty(0, dtype=torch.long)
    out, (_, alpha) = conv(torch.randn(5, 4), empty_edges, empty_types, True)
    assert torch.equal(out, conv.bias.expand(5, 6))  # no neighbours: zero aggregation + bias
    assert alpha.shape == (0, 2)
    assert conv(torch.randn(0, 4), empty_edges, empty_types).shape == (0, 6)
    dense = DenseMHGAConv(4, 3, heads=2)
    rel = torch.empty(0, 0, dtype=torch.long)
    assert dense(torch.randn(2, 0, 4), rel).shape == (2, 0, 6)


def test_bad_input_errors():
    conv = MHGAConv(4, 3)
    with pytest.raises(ValueError, match="edge_type"):
        conv(torch.randn(4, 4), EDGE_INDEX, EDGE_TYPE[:-1])
    with pytest.raises(ValueError, match="DenseMHGAConv"):
        conv(torch.randn(2, 4, 4), EDGE_INDEX, EDGE_TYPE)
    dense = DenseMHGAConv(4, 3)
    with pytest.raises(ValueError, match="relation_matrix"):
        dense(torch.randn(2, 5, 4), relation_matrix(2, 2))
    with pytest.raises(TypeError, match="integer codes"):
        dense(torch.randn(2, 5, 4), relation_matrix(2, 2, paired=False).float())
    with pytest.raises(ValueError, match="mask"):
        dense(torch.randn(2, 5, 4), relation_matrix(2, 2, paired=False), torch.ones(3, 5).bool())


@pytest.mark.parametrize("concat", [True, False])
def test_dense_matches_sparse_values_and_gradients(concat):
    torch.manual_seed(3)
    b, h, w, c_in = 2, 2, 2, 6
    n = 2 * (1 + h * w)  # a pair graph
    sparse = MHGAConv(c_in, 4, heads=2, concat=concat, learn_strengths=True)
    torch.nn.init.normal_(sparse.bias)
    dense = DenseMHGAConv(c_in, 4, heads=2, concat=concat, learn_strengths=True)
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(b, n, c_in)
    x_sparse, x_dense = x.clone().requires_grad_(), x.clone().requires_grad_()

    edge_index, edge_type = complete_token_graph(h, w)
    # B disjoint copies of the complete graph with node offsets, as a Batch would make them.
    offsets = (torch.arange(b) * n).repeat_interleave(edge_index.size(1))
    batched_ei = edge_index.repeat(1, b) + offsets
    out_sparse = sparse(x_sparse.reshape(b * n, c_in), batched_ei, edge_type.repeat(b))
    out_dense = dense(x_dense, relation_matrix(h, w))
    assert torch.allclose(out_dense.reshape(b * n, -1), out_sparse, atol=1e-5)

    grad_out = torch.randn_like(out_sparse)
    out_sparse.backward(grad_out)
    out_dense.backward(grad_out.view_as(out_dense))
    assert torch.allclose(x_sparse.grad, x_dense.grad, atol=1e-5)
    for (name, p_s), (_, p_d) in zip(
        sparse.named_parameters(), dense.named_parameters(), strict=True
    ):
        assert torch.allclose(p_s.grad, p_d.grad, atol=1e-5), name


def test_dense_matches_einsum_reference():
    torch.manual_seed(8)
    dense = DenseMHGAConv(6, 4, heads=2).double()
    torch.nn.init.normal_(dense.bias)
    rel = relation_matrix(2, 3, adjacency="grid")
    x = torch.randn(3, rel.size(0), 6, dtype=torch.float64)
    out = dense(x, rel)
    for b in range(3):
        assert torch.allclose(out[b], dense_reference(x[b], rel, dense), atol=1e-10)


def test_dense_attention_rows_sum_to_one():
    dense = DenseMHGAConv(4, 2, heads=3)
    _, alpha = dense(torch.randn(2, 10, 4), relation_matrix(2, 2), return_attention_weights=True)
    assert alpha.shape == (2, 3, 10, 10)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, 3, 10), atol=1e-6)


def test_dense_node_mask_equals_smaller_graph():
    # Padding: pair 1 has only its first 3 nodes; its output must equal the 3-node graph's.
    torch.manual_seed(4)
    dense = DenseMHGAConv(4, 2, heads=2)
    torch.nn.init.normal_(dense.bias)
    rel = relation_matrix(2, 2, paired=False)  # n = 5
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = dense(x, rel, mask)
    assert torch.allclose(out[0], dense(x[:1], rel)[0], atol=1e-6)
    assert torch.allclose(out[1, :3], dense(x[1:, :3], rel[:3, :3])[0], atol=1e-6)
    assert torch.all(out[1, 3:] == 0)


def test_dense_edge_mask_equals_sparse_subgraph():
    torch.manual_seed(5)
    sparse = MHGAConv(4, 3, heads=2)
    torch.nn.init.normal_(sparse.bias)
    dense = DenseMHGAConv(4, 3, heads=2)
    dense.load_state_dict(sparse.state_dict())
    rel = relation_matrix(2, 2, paired=False)
    adj = torch.zeros(5, 5, dtype=torch.bool)
    adj[EDGE_INDEX[1], EDGE_INDEX[0]] = True  # node 4 has no in-edges at all
    x = torch.randn(5, 4)
    out = dense(x, rel, edge_mask=adj)
    ref = sparse(x, EDGE_INDEX, rel[EDGE_INDEX[1], EDGE_INDEX[0]])
    assert torch.allclose(out, ref, atol=1e-6)
    x.requires_grad_()
    dense(x, rel, edge_mask=adj).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_torch_compile_parity_without_graph_breaks():
    torch.manual_seed(6)
    conv = MHGAConv(6, 4, heads=2)
    dense = DenseMHGAConv(6, 4, heads=2)
    x = torch.randn(4, 6)
    expected = conv(x, EDGE_INDEX, EDGE_TYPE)
    # fullgraph=True raises on any graph break.
    compiled = torch.compile(conv, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x, EDGE_INDEX, EDGE_TYPE), expected, atol=1e-6)
    rel = relation_matrix(1, 1)
    xb = torch.randn(2, 4, 6)
    compiled_dense = torch.compile(dense, fullgraph=True, backend="eager")
    assert torch.allclose(compiled_dense(xb, rel), dense(xb, rel), atol=1e-6)


@pytest.mark.slow
def test_torch_compile_inductor_parity():
    torch.manual_seed(7)
    conv = MHGAConv(6, 4, heads=2)
    x = torch.randn(4, 6)
    compiled = torch.compile(conv, fullgraph=True)
    assert torch.allclose(
        compiled(x, EDGE_INDEX, EDGE_TYPE), conv(x, EDGE_INDEX, EDGE_TYPE), atol=1e-5
    )


def test_attention_explainer_sees_alpha():
    # PyG's AttentionExplainer collects the `alpha` kwarg of message(); check it is there.
    from torch_geometric.explain import Explainer
    from torch_geometric.explain.algorithm import AttentionExplainer

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = MHGAConv(4, 2, heads=2)

        def forward(self, x, edge_index, edge_type):
            return self.conv(x, edge_index, edge_type)

    explainer = Explainer(
        Model(),
        algorithm=AttentionExplainer(),
        explanation_type="model",
        edge_mask_type="object",
        model_config={"mode": "regression", "task_level": "node", "return_type": "raw"},
    )
    explanation = explainer(torch.randn(4, 4), EDGE_INDEX, edge_type=EDGE_TYPE)
    assert explanation.edge_mask.shape == (EDGE_INDEX.size(1),)
    assert explanation.edge_mask.abs().sum() > 0


def test_lazy_in_channels():
    conv = MHGAConv(-1, 3, heads=2)
    dense = DenseMHGAConv(-1, 3, heads=2)
    assert conv(torch.randn(4, 5), EDGE_INDEX, EDGE_TYPE).shape == (4, 6)
    assert conv.lin.weight.shape == (6, 5)
    dense.load_state_dict(conv.state_dict())
    assert dense(torch.randn(1, 4, 5), torch.zeros(4, 4, dtype=torch.long)).shape == (1, 4, 6)
