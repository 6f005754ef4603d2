"""Token graph builders against hand-worked examples and plain-Python loop references."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, HeteroData

from csetgraph.graph import (
    RELATIONS,
    complete_token_graph,
    grid_coords,
    relation_matrix,
    to_homogeneous,
    token_graph_batch,
    token_graph_pair,
    token_graph_single,
    token_relation,
)


def loop_relation(p: int, q: int, w: int, adjacency: str) -> int:
    """Reference relation of two token positions, written from the definition."""
    if p == q:
        return 0
    if adjacency == "sequence":
        return 1 if abs(p - q) == 1 else 2
    if p == 0 or q == 0:  # class token: no grid cell
        return 2
    (rp, cp), (rq, cq) = divmod(p - 1, w), divmod(q - 1, w)
    return 1 if abs(rp - rq) + abs(cp - cq) == 1 else 2


def loop_relation_matrix(h: int, w: int, adjacency: str, paired: bool) -> torch.Tensor:
    n = 1 + h * w
    positions = list(range(n)) * (2 if paired else 1)
    return torch.tensor([[loop_relation(p, q, w, adjacency) for q in positions] for p in positions])


def test_hand_worked_sequence_relations_2x2():
    # N = 5: class token 0, patches 1..4. Sequence rule: |p - q| == 1 is adjacent.
    expected = torch.tensor(
        [
            [0, 1, 2, 2, 2],
            [1, 0, 1, 2, 2],
            [2, 1, 0, 1, 2],
            [2, 2, 1, 0, 1],
            [2, 2, 2, 1, 0],
        ]
    )
    assert torch.equal(relation_matrix(2, 2, paired=False), expected)


def test_hand_worked_grid_relations_2x2():
    # Grid 2 x 2: patches 1 (0,0), 2 (0,1), 3 (1,0), 4 (1,1). 2 and 3 are diagonal (distant);
    # 1 and 3 are vertical neighbours; the class token is adjacent to nothing.
    expected = torch.tensor(
        [
            [0, 2, 2, 2, 2],
            [2, 0, 1, 1, 2],
            [2, 1, 0, 2, 1],
            [2, 1, 2, 0, 1],
            [2, 2, 1, 1, 0],
        ]
    )
    assert torch.equal(relation_matrix(2, 2, adjacency="grid", paired=False), expected)


@pytest.mark.parametrize("adjacency", ["sequence", "grid"])
@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize(("h", "w"), [(3, 2), (2, 4), (1, 1)])
def test_relation_matrix_matches_loop(h, w, adjacency, paired):
    rel = relation_matrix(h, w, adjacency=adjacency, paired=paired)
    assert rel.dtype == torch.long
    assert torch.equal(rel, loop_relation_matrix(h, w, adjacency, paired))


def test_relation_matrix_pair_blocks_relate_same_index_as_same():
    rel = relation_matrix(3, 2)
    n = 7
    assert rel.shape == (2 * n, 2 * n)
    # vis token k and ir token k are `same`; all four blocks are equal.
    for block in (rel[:n, n:], rel[n:, :n], rel[n:, n:]):
        assert torch.equal(block, rel[:n, :n])
    assert torch.all(rel[torch.arange(n), torch.arange(n) + n] == 0)


def test_relation_matrix_cached_but_returned_copies_are_independent():
    a = relation_matrix(4, 2)
    a.fill_(7)  # callers may modify what they get
    b = relation_matrix(4, 2)
    assert torch.equal(b, loop_relation_matrix(4, 2, "sequence", True))


def test_token_relation_broadcasts_and_rejects_missing_grid_width():
    codes = token_relation(torch.tensor([[0], [3]]), torch.tensor([0, 2, 3, 9]))
    assert torch.equal(codes, torch.tensor([[0, 2, 2, 2], [2, 1, 0, 2]]))
    with pytest.raises(ValueError, match="grid_width"):
        token_relation(torch.tensor([1]), torch.tensor([2]), adjacency="grid")


def test_bad_layout_errors_are_clear():
    with pytest.raises(ValueError, match="adjacency"):
        relation_matrix(2, 2, adjacency="diagonal")
    with pytest.raises(ValueError, match="h x w"):
        relation_matrix(0, 2)
    with pytest.raises(ValueError, match=r"\(N=7, d\)"):
        token_graph_pair(torch.randn(6, 3), torch.randn(7, 3), h=3, w=2)


def test_grid_coords_hand_worked():
    assert grid_coords(2, 3).tolist() == [[-1, -1], [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


@pytest.mark.parametrize("adjacency", ["sequence", "grid"])
def test_pair_hetero_graph_edges_follow_positions(adjacency):
    h, w, d = 3, 2, 5
    n = 1 + h * w
    x_vis, x_ir = torch.randn(n, d), torch.randn(n, d)
    data = token_graph_pair(x_vis, x_ir, h=h, w=w, adjacency=adjacency)
    assert isinstance(data, HeteroData)
    assert data.node_types == ["vis", "ir"]
    assert len(data.edge_types) == 12
    assert torch.equal(data["vis"].x, x_vis) and torch.equal(data["ir"].x, x_ir)
    assert torch.equal(data["ir"].pos, torch.arange(n))
    assert torch.equal(data["vis"].grid, grid_coords(h, w))
    seen = set()
    for src_type, relation, dst_type in data.edge_types:
        edge_index = data[src_type, relation, dst_type].edge_index
        pos_src = data[src_type].pos[edge_index[0]]
        pos_dst = data[dst_type].pos[edge_index[1]]
        for p, q in zip(pos_src.tolist(), pos_dst.tolist(), strict=True):
            assert RELATIONS[loop_relation(q, p, w, adjacency)] == relation
            seen.add((src_type, dst_type, p, q))
    # Together the 12 edge types are exactly the complete graph on 2N nodes, no duplicates.
    assert sum(data[et].edge_index.size(1) for et in data.edge_types) == (2 * n) ** 2
    assert len(seen) == (2 * n) ** 2


def test_pair_graph_edge_counts_hand_worked():
    # 3 x 2 sequence rule: N = 7 tokens, 7 `same`, 2 * 6 = 12 `adjacent`, 49 - 19 = 30 `distant`
    # ordered pairs per (src, dst) block.
    data = token_graph_pair(h=3, w=2)
    for src_type, relation, dst_type in data.edge_types:
        count = data[src_type, relation, dst_type].num_edges
        assert count == {"same": 7, "adjacent": 12, "distant": 30}[relation]
    assert data["vis"].num_nodes == 7


def test_homogeneous_edge_types_map_to_relation_codes():
    h, w = 2, 3
    n = 1 + h * w
    data = token_graph_pair(torch.randn(n, 4), torch.randn(n, 4), h=h, w=w, adjacency="grid")
    homo = to_homogeneous(data)
    assert homo.num_nodes == 2 * n
    assert homo.node_type.tolist() == [0] * n + [1] * n  # vis first, then ir
    assert torch.equal(homo.x, torch.cat([data["vis"].x, data["ir"].x]))
    # PyG's type id k names edge type names[k]; our code is the relation of that name.
    for pyg_id, code in zip(homo.hetero_edge_type.tolist(), homo.edge_type.tolist(), strict=True):
        assert RELATIONS[code] == homo._edge_type_names[pyg_id][1]
    # And against positions: scatter the codes into a dense matrix, compare with the loop.
    dense = torch.full((2 * n, 2 * n), -1)
    dense[homo.edge_index[1], homo.edge_index[0]] = homo.edge_type
    assert torch.equal(dense, loop_relation_matrix(h, w, "grid", True))


def test_complete_token_graph_matches_relation_matrix():
    edge_index, edge_type = complete_token_graph(2, 2, paired=True)
    n = 10
    assert edge_index.shape == (2, n * n)
    dense = torch.full((n, n), -1)
    dense[edge_index[1], edge_index[0]] = edge_type
    assert torch.equal(dense, loop_relation_matrix(2, 2, "sequence", True))


def test_single_image_graph():
    x = torch.randn(5, 3)
    data = token_graph_single(x, h=2, w=2, modality="ir")
    assert data.node_types == ["ir"]
    assert [et[1] for et in data.edge_types] == list(RELATIONS)
    homo = to_homogeneous(data)
    dense = torch.full((5, 5), -1)
    dense[homo.edge_index[1], homo.edge_index[0]] = homo.edge_type
    assert torch.equal(dense, loop_relation_matrix(2, 2, "sequence", False))


def test_batch_of_pair_graphs_offsets_nodes():
    b, h, w, d = 3, 2, 2, 4
    n = 1 + h * w
    x_vis, x_ir = torch.randn(b, n, d), torch.randn(b, n, d)
    batch = token_graph_batch(x_vis, x_ir, h=h, w=w)
    assert isinstance(batch, Batch)
    assert batch.num_graphs == b
    assert torch.equal(batch["vis"].x, x_vis.reshape(b * n, d))
    assert torch.equal(batch["vis"].batch, torch.arange(b).repeat_interleave(n))
    edge_index = batch["vis", "same", "ir"].edge_index
    # `same` vis -> ir edges link the same token of the same pair only.
    assert torch.equal(edge_index[0], edge_index[1])
    assert edge_index.size(1) == b * n
    homo = to_homogeneous(batch)
    assert homo.edge_index.size(1) == b * (2 * n) ** 2


def test_relation_matrix_is_computed_once_per_layout():
    from csetgraph.graph.token_graph import _relation_matrix_cached

    relation_matrix(5, 3, adjacency="grid")
    before = _relation_matrix_cached.cache_info()
    relation_matrix(5, 3, adjacency="grid")
    after = _relation_matrix_cached.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses


@pytest.mark.parametrize("paired", [False, True])
def test_batch_token_graphs_equals_pyg_batch(paired):
    from torch_geometric.data import Batch, Data

    from csetgraph.graph import batch_token_graphs

    edge_index, edge_type = complete_token_graph(2, 3, paired=paired)
    n = (2 if paired else 1) * (1 + 2 * 3)
    graphs = [Data(edge_index=edge_index, edge_type=edge_type, num_nodes=n) for _ in range(4)]
    want = Batch.from_data_list(graphs)
    got_index, got_type = batch_token_graphs(edge_index, edge_type, n, 4)
    assert torch.equal(got_index, want.edge_index)
    assert torch.equal(got_type, want.edge_type)


@pytest.mark.parametrize(("adjacency", "paired"), [("sequence", True), ("grid", False)])
def test_local_token_graph_keeps_exactly_the_same_and_adjacent_pairs(adjacency, paired):
    from csetgraph.graph import local_token_graph

    edge_index, edge_type = local_token_graph(3, 2, adjacency=adjacency, paired=paired)
    rel = loop_relation_matrix(3, 2, adjacency, paired)
    want = {
        (j, i, int(rel[i, j])) for i in range(len(rel)) for j in range(len(rel)) if rel[i, j] < 2
    }
    got = {(int(s), int(d), int(t)) for (s, d), t in zip(edge_index.t(), edge_type, strict=True)}
    assert want and got == want and edge_index.size(1) == len(want)
