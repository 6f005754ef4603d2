"""Model-side mechanism health: class-token cosine, CA entropy and MHGA relation mass against
hand-worked values and loops, and what the CSET training forward reports."""

from __future__ import annotations

import math

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine.health import TRIPLET_FEATURES
from csetgraph.graph import relation_matrix
from csetgraph.models import build_model
from csetgraph.models.health import (
    class_token_cosine,
    local_edges,
    logit_entropy,
    relation_codes,
    relation_mass,
    uniform_mass,
)

#: A 3-block, 32-wide model on 64 x 32 images (4 x 2 patches) with every mechanism on.
FULL = [
    "model.pretrained=",
    "model.backbone=vit_tiny_patch16_224",
    "model.embed_dim=32",
    "model.depth=3",
    "model.num_heads=2",
    "model.drop_path_rate=0.0",
    "model.se.direction=both",
    "model.se.layers=[0, 1]",
    "model.se.ratio=0.25",
    "model.ca.enabled=true",
    "model.ca.heads=2",
    "model.mhga.enabled=true",
    "model.mhga.heads=2",
]


def test_class_token_cosine_by_hand():
    clean = torch.tensor([[[1.0, 0.0], [5.0, 5.0]], [[0.0, 1.0], [1.0, 1.0]]])  # (2, 2, 2)
    mixed = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 2.0], [-1.0, 0.0]]])
    # class tokens: (1,0) vs (1,1) -> 1/sqrt(2); (0,1) vs (0,2) -> 1; patches do not count.
    assert class_token_cosine(clean, mixed).item() == pytest.approx((1 / math.sqrt(2) + 1) / 2)


def test_logit_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2), (3/4, 1/4)
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert logit_entropy(logits).item() == pytest.approx((math.log(2) + h2) / 2, rel=1e-6)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("adjacency", ["sequence", "grid"])
def test_relation_codes_equal_the_graph_modules_matrix(paired, adjacency):
    codes = relation_codes(3, 2, adjacency=adjacency, paired=paired)
    assert torch.equal(codes, relation_matrix(3, 2, adjacency=adjacency, paired=paired))


def test_uniform_mass_by_hand():
    # h x w = 1 x 2: tokens 0 (class), 1, 2 in a sequence. Rows: 0 -> (same, adj, dist),
    # 1 -> (adj, same, adj), 2 -> (dist, adj, same). Uniform over all three: same 1/3,
    # adjacent (1/3 + 2/3 + 1/3) / 3 = 4/9, distant 2/9. Local graph (no distant edges):
    # rows 0 and 2 have 2 edges, row 1 has 3: same (1/2 + 1/3 + 1/2) / 3 = 4/9, adjacent 5/9.
    rel = relation_codes(1, 2, adjacency="sequence", paired=False)
    torch.testing.assert_close(uniform_mass(rel), torch.tensor([1 / 3, 4 / 9, 2 / 9]))
    torch.testing.assert_close(
        uniform_mass(rel, local_edges(rel)), torch.tensor([4 / 9, 5 / 9, 0.0])
    )


def test_relation_mass_against_a_loop():
    torch.manual_seed(0)
    rel = relation_codes(2, 2, adjacency="sequence", paired=True)  # n = 10
    att = torch.softmax(torch.randn(2, 3, 10, 10), dim=-1)
    ref = torch.zeros(3)
    for b in range(2):
        for h in range(3):
            for i in range(10):
                for j in range(10):
                    ref[rel[i, j]] += att[b, h, i, j]
    ref /= 2 * 3 * 10
    torch.testing.assert_close(relation_mass(att, rel), ref)
    assert relation_mass(att, rel).sum().item() == pytest.approx(1.0)


def full_model(*overrides):
    """The model the config builds (its own option names, whatever the constructor's)."""
    torch.manual_seed(0)
    cfg = load_config(None, [*FULL, *overrides])
    return build_model(cfg.model, 5, (64, 32)).eval()


@torch.no_grad()
def test_training_forward_reports_health_that_matches_its_streams():
    model = full_model()
    vis, ir = torch.randn(3, 3, 64, 32), torch.randn(3, 3, 64, 32)
    out = model(vis, ir, return_streams=True)
    health = out.health
    assert health.se_layers == (0, 1) and health.triplet_feature in TRIPLET_FEATURES
    # 4 x 2 patches at ratio 0.25: two tokens per image, each layer, each direction.
    for info in out.se_info:
        for edges in info.values():
            assert edges.stats.tokens_per_image.item() == 2.0
            pos = edges.edge_index % (1 + 8)  # positions within each image
            same = (pos[0] == pos[1]).float().mean().item()
            assert edges.stats.same_position.item() == pytest.approx(same)
    last = out.streams[2]
    for m in ("vis", "ir"):
        norm = model.encoder(m).norm
        c, x = norm(last["clean"][m])[:, 0], norm(last["mixed"][m])[:, 0]
        cos = [float(c[b] @ x[b] / (c[b].norm() * x[b].norm())) for b in range(3)]
        assert health.class_cosine[m].item() == pytest.approx(sum(cos) / 3, rel=1e-5)
    assert 0 < health.ca_entropy.item() <= math.log(5) + 1e-6  # 5 identities
    # MHGA: each image's own graph; the mass of both modalities' attention, by a loop.
    rel = relation_matrix(4, 2, paired=False)
    masses = []
    for m in ("vis", "ir"):
        _, att = model.mhga({m: out.streams[1]["clean"][m]}, return_attention_weights=True)
        mass = torch.zeros(3)
        for i in range(rel.shape[0]):
            for j in range(rel.shape[1]):
                mass[rel[i, j]] += att[:, :, i, j].sum()
        masses.append(mass / (att.shape[0] * att.shape[1] * rel.shape[0]))
    torch.testing.assert_close(health.mhga_mass, (masses[0] + masses[1]) / 2)
    n = 9  # uniform over all 9 tokens: same 1/9 per row
    assert health.mhga_uniform[0].item() == pytest.approx(1 / n)


def test_health_follows_the_switches():
    vis, ir = torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32)
    off = ("model.se.direction=i2v", "model.ca.enabled=false", "model.mhga.enabled=false")
    out = full_model(*off)(vis, ir)
    assert set(out.health.class_cosine) == {"ir"}  # i2v: only the infrared stream receives
    assert out.health.ca_entropy is None and out.health.mhga_mass is None
    assert out.se_info[0]["v2i"] is None
    baseline = full_model("model.se.direction=none", "model.ca.enabled=false")(vis, ir)
    assert baseline.health.class_cosine == {} and baseline.se_info == []
    assert baseline.health.triplet_feature in TRIPLET_FEATURES


def test_pair_graph_mass_uses_the_pair_relations():
    model = full_model("model.mhga.pair_graph=true")
    out = model(torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32))
    # 2 x 9 nodes, complete: every row has 2 same (itself and its partner) of 18.
    assert out.health.mhga_uniform[0].item() == pytest.approx(2 / 18)
    assert out.health.mhga_mass.sum().item() == pytest.approx(1.0, rel=1e-5)
