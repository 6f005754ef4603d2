"""HeteroMHGAConv: eq. 5-7 on x_dict / edge_index_dict with one softmax per target node.

References: MHGAConv on PyG's homogeneous form of the same graph (to_homogeneous), the loop of
conftest.py on a hand-built homogeneous graph, and PyG's HeteroConv for the contrast.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData
from torch_geometric.loader import DataLoader
from torch_geometric.nn import HeteroConv, global_mean_pool

from csetgraph.graph import RELATIONS, to_homogeneous, token_graph_batch, token_graph_pair
from csetgraph.nn import HeteroMHGAConv, MHGAConv

GRAPHS = ("pair", "batch", "random")


def _random_hetero(seed: int) -> HeteroData:
    """Three node types of different sizes, random typed edges (duplicates included), and a
    node type (``cls``) that only sends."""
    g = torch.Generator().manual_seed(seed)
    sizes = {"vis": 5, "ir": 4, "cls": 2}
    data = HeteroData()
    for t, n in sizes.items():
        data[t].x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    for src in sizes:
        for rel in RELATIONS:
            for dst in ("vis", "ir"):
                e = int(torch.randint(0, 7, (1,), generator=g))
                data[src, rel, dst].edge_index = torch.stack(
                    [
                        torch.randint(0, sizes[src], (e,), generator=g),
                        torch.randint(0, sizes[dst], (e,), generator=g),
                    ]
                )
    return data


def _graph(kind: str) -> HeteroData:
    torch.manual_seed(30)
    if kind == "pair":
        return token_graph_pair(
            torch.randn(7, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64), h=3, w=2
        )
    if kind == "batch":
        x_vis = torch.randn(3, 5, 6, dtype=torch.float64)
        return token_graph_batch(x_vis, torch.randn_like(x_vis), h=2, w=2)
    return _random_hetero(31)


def _layers(seed: int, **kwargs) -> tuple[HeteroMHGAConv, MHGAConv]:
    torch.manual_seed(seed)
    hetero = HeteroMHGAConv(6, 3, heads=2, learn_strengths=True, **kwargs).double()
    torch.nn.init.normal_(hetero.conv.bias)
    homo = MHGAConv(6, 3, heads=2, learn_strengths=True, **kwargs).double()
    homo.load_state_dict(hetero.conv.state_dict())
    return hetero, homo


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("kind", GRAPHS)
def test_equals_mhga_on_to_homogeneous(kind, concat):
    assert GRAPHS
    data = _graph(kind)
    hetero, homo_conv = _layers(32, concat=concat)
    homo = to_homogeneous(data)
    node_names, edge_names = homo._node_type_names, homo._edge_type_names

    x_dict = {t: data[t].x.clone().requires_grad_() for t in node_names}
    x_homo = torch.cat([data[t].x for t in node_names]).requires_grad_()
    assert torch.equal(x_homo, homo.x)  # PyG's node order: by node type
    out, alpha = hetero(x_dict, data.edge_index_dict, return_attention_weights=True)
    out_ref, (_, alpha_ref) = homo_conv(
        x_homo, homo.edge_index, homo.edge_type, return_attention_weights=True
    )

    assert list(out) == list(data.x_dict)
    for k, t in enumerate(node_names):
        assert torch.allclose(out[t], out_ref[homo.node_type == k], atol=1e-10), t
    assert set(alpha) == set(data.edge_types)
    for k, et in enumerate(edge_names):
        edge_index, a = alpha[et]
        assert edge_index is data[et].edge_index
        assert torch.allclose(a, alpha_ref[homo.hetero_edge_type == k], atol=1e-10), et

    grad = torch.randn_like(out_ref)
    sum((out[t] * grad[homo.node_type == k]).sum() for k, t in enumerate(node_names)).backward()
    out_ref.backward(grad)
    for k, t in enumerate(node_names):
        assert torch.allclose(x_dict[t].grad, x_homo.grad[homo.node_type == k], atol=1e-10)
    named = zip(hetero.conv.named_parameters(), homo_conv.named_parameters(), strict=True)
    for (name, p), (_, q) in named:
        assert torch.allclose(p.grad, q.grad, atol=1e-10), name


def test_custom_relations_match_the_loop(loop_mhga):
    # Two relation names of one's own and two node types; reference: the loop on the union.
    torch.manual_seed(33)
    hetero = HeteroMHGAConv(4, 2, heads=2, relations=("near", "far"), strengths=(1.0, 0.4))
    hetero = hetero.double()
    torch.nn.init.normal_(hetero.conv.bias)
    x = {"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(2, 4, dtype=torch.float64)}
    edges = {
        ("a", "near", "b"): torch.tensor([[0, 2], [1, 1]]),
        ("b", "far", "a"): torch.tensor([[1, 0, 1], [0, 2, 2]]),
        ("a", "far", "b"): torch.tensor([[1], [1]]),
    }
    out = hetero(x, edges)
    # Union: a nodes 0-2, b nodes 3-4; codes near = 0, far = 1.
    edge_index = torch.tensor([[0, 2, 4, 3, 4, 1], [4, 4, 0, 2, 2, 4]])
    edge_type = torch.tensor([0, 0, 1, 1, 1, 1])
    expected = loop_mhga(hetero.conv, torch.cat([x["a"], x["b"]]), edge_index, edge_type)
    assert torch.allclose(out["a"], expected[:3], atol=1e-10)
    assert torch.allclose(out["b"], expected[3:], atol=1e-10)
    assert torch.equal(out["a"][1], hetero.conv.bias)  # no in-edge: the bias alone


def _per_relation_alpha(conv, data):
    """What HeteroConv({edge_type: conv}) computes per edge type: one softmax each."""
    return {
        et: conv(
            (data[et[0]].x, data[et[2]].x),
            data[et].edge_index,
            torch.full((data[et].num_edges,), RELATIONS.index(et[1])),
            return_attention_weights=True,
        )[1][1]
        for et in data.edge_types
    }


def test_one_softmax_per_target_unlike_heteroconv():
    data = _graph("pair")
    hetero, conv = _layers(34)
    n = data["vis"].num_nodes
    _, alpha = hetero(data.x_dict, data.edge_index_dict, return_attention_weights=True)
    per_type = _per_relation_alpha(conv, data)

    def total_into(alphas, dst_type):
        sums = torch.zeros(n, 2, dtype=torch.float64)
        for et, a in alphas.items():
            if et[2] == dst_type:
                sums.index_add_(0, data[et].edge_index[1], a)
        return sums

    hetero_alpha = {et: a for et, (_, a) in alpha.items()}
    for dst in ("vis", "ir"):
        # Eq. 6: a node's attention sums to 1 over all its in-edges; per edge type it sums to 1
        # in each of the 6 edge types (3 relations x 2 source types) that reach it.
        assert torch.allclose(total_into(hetero_alpha, dst), torch.ones(n, 2).double(), atol=1e-10)
        assert torch.allclose(
            total_into(per_type, dst), torch.full((n, 2), 6.0).double(), atol=1e-10
        )

    # HeteroConv's outputs are the sum of the per-type results: different numbers.
    heteroconv = HeteroConv({et: conv for et in data.edge_types}, aggr="sum")
    codes = {
        et: torch.full((data[et].num_edges,), RELATIONS.index(et[1])) for et in data.edge_types
    }
    out_hc = heteroconv(data.x_dict, data.edge_index_dict, codes)
    out = hetero(data.x_dict, data.edge_index_dict)
    assert (out_hc["vis"] - out["vis"]).abs().max() > 0.1


def test_strength_moves_attention_between_relations_only_with_one_softmax():
    # Lowering the distant strength changes the attention on `same` edges under eq. 6; per
    # edge type (HeteroConv) it cannot: there the strength is a temperature inside its type.
    data = _graph("pair")
    hetero, conv = _layers(35)
    same = ("vis", "same", "vis")
    before = hetero(data.x_dict, data.edge_index_dict, True)[1][same][1]
    per_type_before = _per_relation_alpha(conv, data)
    with torch.no_grad():
        hetero.conv.strengths[2] = 0.05
        conv.strengths[2] = 0.05
    after = hetero(data.x_dict, data.edge_index_dict, True)[1][same][1]
    per_type_after = _per_relation_alpha(conv, data)
    assert (after - before).abs().max() > 1e-3
    for et in data.edge_types:
        changed = not torch.allclose(per_type_before[et], per_type_after[et], atol=1e-12)
        assert changed == (et[1] == "distant"), et


class PairClassifier(torch.nn.Module):
    """A small model on HeteroData batches: MHGA, then a mean pool per node type and pair."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.mhga = HeteroMHGAConv(channels, 4, heads=2, learn_strengths=True)
        self.head = torch.nn.Linear(2 * 8, num_classes)

    def forward(self, x_dict, edge_index_dict, batch_dict, num_graphs):
        h = {t: F.elu(v) for t, v in self.mhga(x_dict, edge_index_dict).items()}
        pooled = [global_mean_pool(h[t], batch_dict[t], size=num_graphs) for t in ("vis", "ir")]
        return self.head(torch.cat(pooled, dim=-1))  # (B, num_classes)


def test_model_on_batched_heterodata():
    torch.manual_seed(36)
    graphs = []
    for label in range(5):
        g = token_graph_pair(torch.randn(5, 6), torch.randn(5, 6), h=2, w=2)
        g.y = torch.tensor([label % 2])
        graphs.append(g)
    model = PairClassifier(6, 2)
    batch = next(iter(DataLoader(graphs, batch_size=5)))
    logits = model(batch.x_dict, batch.edge_index_dict, batch.batch_dict, batch.num_graphs)
    assert logits.shape == (5, 2)
    # Batching does not mix the graphs: each row equals the model on that graph alone.
    for i, g in enumerate(graphs):
        one = {t: torch.zeros(g[t].num_nodes, dtype=torch.long) for t in g.node_types}
        alone = model(g.x_dict, g.edge_index_dict, one, 1)
        assert torch.allclose(logits[i], alone[0], atol=1e-5)
    # It trains: gradients reach every parameter (strengths included), and steps lower the loss.
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        logits = model(batch.x_dict, batch.edge_index_dict, batch.batch_dict, batch.num_graphs)
        loss = F.cross_entropy(logits, batch.y)
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_input_errors():
    data = _graph("pair")
    conv = HeteroMHGAConv(6, 3).double()
    with pytest.raises(ValueError, match="relation 'near'"):
        conv(data.x_dict, {("vis", "near", "ir"): torch.tensor([[0], [0]])})
    with pytest.raises(ValueError, match=r"x_dict\['ir'\]"):
        conv({"vis": data["vis"].x}, data.edge_index_dict)
    with pytest.raises(ValueError, match="one feature width"):
        conv({"vis": data["vis"].x, "ir": data["ir"].x[:, :4]}, data.edge_index_dict)
    with pytest.raises(ValueError, match="one per strength"):
        HeteroMHGAConv(6, 3, relations=("same", "distant"))
    with pytest.raises(TypeError, match="one int"):
        HeteroMHGAConv((6, 4), 3)
    sparse = {("vis", "same", "vis"): data["vis", "same", "vis"].edge_index}
    sparse = {
        k: torch.sparse_coo_tensor(v, torch.ones(v.size(1)), check_invariants=True)
        for k, v in sparse.items()
    }
    with pytest.raises(ValueError, match="dense"):
        conv(data.x_dict, sparse)


def test_repr_and_state_dict():
    conv = HeteroMHGAConv(6, 3, heads=2)
    assert repr(conv) == (
        "HeteroMHGAConv(6, 3, heads=2, relations=('same', 'adjacent', 'distant'), "
        "strengths=(1.0, 0.7, 0.3))"
    )
    assert set(conv.state_dict()) == {f"conv.{k}" for k in MHGAConv(6, 3).state_dict()}


def test_compiles_without_graph_breaks():
    data = _graph("pair")
    hetero, _ = _layers(37)
    expected = hetero(data.x_dict, data.edge_index_dict)
    compiled = torch.compile(hetero, fullgraph=True, backend="eager")  # raises on a break
    out = compiled(data.x_dict, data.edge_index_dict)
    for t in expected:
        assert torch.allclose(out[t], expected[t], atol=1e-10), t
