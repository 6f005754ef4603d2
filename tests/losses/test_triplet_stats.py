"""Triplet health statistics: a hand-worked batch and a brute-force loop over anchors."""

from __future__ import annotations

import pytest
import torch

from csetgraph.losses import cross_modal_triplet_loss


def test_hand_worked_batch():
    # vis a0 (0,0) pid 0, a1 (2,0) pid 1, a2 (10,10) pid 2 (no infrared partner: not an
    # anchor); ir b0 (0,1) pid 0, b1 (2,2) pid 1. Squared distances: a0-b0 1, a0-b1 8,
    # a1-b0 5, a1-b1 4 (a2 is 128 or more from both). Margin 2: hinges a0 1-8+2 < 0,
    # a1 4-5+2 = 1, b0 1-5+2 < 0, b1 4-8+2 < 0 -> one active anchor of four.
    feats = torch.tensor([[0.0, 0], [2, 0], [10, 10], [0, 1], [2, 2]])
    pids = torch.tensor([0, 1, 2, 0, 1])
    modality = torch.tensor([0, 0, 0, 1, 1])
    loss, stats = cross_modal_triplet_loss(feats, pids, modality, margin=2.0, return_stats=True)
    assert loss.item() == pytest.approx(0.25)
    assert stats.active.item() == pytest.approx(0.25)
    assert stats.pos_dist.item() == pytest.approx((1 + 4 + 1 + 4) / 4)
    assert stats.neg_dist.item() == pytest.approx((8 + 5 + 5 + 8) / 4)
    plain = cross_modal_triplet_loss(feats, pids, modality, margin=2.0)
    assert torch.equal(plain, loss)  # the statistics change nothing


def loop_reference(feats, pids, modality, margin):
    active, pos, neg = [], [], []
    n = len(pids)
    for a in range(n):
        d = [float(((feats[a] - feats[j]) ** 2).sum()) for j in range(n)]
        other = [j for j in range(n) if modality[j] != modality[a]]
        p = [d[j] for j in other if pids[j] == pids[a]]
        q = [d[j] for j in other if pids[j] != pids[a]]
        if p and q:
            pos.append(max(p))
            neg.append(min(q))
            active.append(max(p) - min(q) + margin > 0)
    return sum(active) / len(active), sum(pos) / len(pos), sum(neg) / len(neg)


@pytest.mark.parametrize("normalize", [False, True])
def test_random_batch_against_a_loop(normalize):
    torch.manual_seed(0)
    feats = torch.randn(12, 5, dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1, 2, 3] * 2)
    modality = torch.tensor([0] * 6 + [1] * 6)
    _, stats = cross_modal_triplet_loss(
        feats, pids, modality, margin=0.5, normalize=normalize, return_stats=True
    )
    ref = loop_reference(torch.nn.functional.normalize(feats) if normalize else feats, pids,
                         modality, 0.5)  # fmt: skip
    assert stats.active.item() == pytest.approx(ref[0])
    assert stats.pos_dist.item() == pytest.approx(ref[1], rel=1e-5)
    assert stats.neg_dist.item() == pytest.approx(ref[2], rel=1e-5)
