import itertools

import torch

from csetgraph.losses import cross_modal_triplet_loss, squared_euclidean


def loop_reference(feat, pids, mods, margin):
    losses = []
    for a in range(len(feat)):
        pos = [
            ((feat[a] - feat[p]) ** 2).sum()
            for p in range(len(feat))
            if pids[p] == pids[a] and mods[p] != mods[a]
        ]
        neg = [
            ((feat[a] - feat[n]) ** 2).sum()
            for n in range(len(feat))
            if pids[n] != pids[a] and mods[n] != mods[a]
        ]
        if pos and neg:
            losses.append(torch.clamp(max(pos) - min(neg) + margin, min=0))
    return torch.stack(losses).mean()


def test_matches_a_loop_over_cross_modal_triplets():
    torch.manual_seed(0)
    feat = torch.randn(12, 5, dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1, 2, 2] * 2)
    mods = torch.tensor([0] * 6 + [1] * 6)
    for margin in (0.3, 5.0):
        got = cross_modal_triplet_loss(feat, pids, mods, margin)
        torch.testing.assert_close(got, loop_reference(feat, pids, mods, margin))


def test_same_modality_pairs_are_never_mined():
    # Visible 0 and 1 share a pid and are far apart, but they are the same modality.
    feat = torch.tensor([[0.0], [10.0], [0.0], [3.0]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1])
    mods = torch.tensor([0, 0, 1, 1])
    # anchors 0,1 (vis): pos = ir sample 2, neg = ir sample 3; anchors 2,3 (ir) lack a pos/neg pair
    # anchor 0: d(0,2)=0, d(0,3)=9 -> max(0 - 9 + .3, 0) = 0
    # anchor 1: d(1,2)=100, d(1,3)=49 -> 51.3 ; anchor 2: pos {0,1} max 100, neg none -> skip
    # anchor 3: pos none -> skip
    got = cross_modal_triplet_loss(feat, pids, mods, 0.3)
    torch.testing.assert_close(got, torch.tensor((0 + 51.3) / 2, dtype=torch.float64))


def test_squared_euclidean_matches_cdist():
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(squared_euclidean(x, y), torch.cdist(x, y) ** 2)
    for i, j in itertools.product(range(4), range(5)):
        assert squared_euclidean(x, y)[i, j] >= 0


def test_normalized_variant_is_the_loss_of_unit_features():
    torch.manual_seed(1)
    feat = torch.randn(8, 4, dtype=torch.float64) * 10
    pids = torch.tensor([0, 1, 2, 3] * 2)
    mods = torch.tensor([0] * 4 + [1] * 4)
    unit = feat / feat.norm(dim=1, keepdim=True)
    got = cross_modal_triplet_loss(feat, pids, mods, 0.3, normalize=True)
    torch.testing.assert_close(got, loop_reference(unit, pids, mods, 0.3))
    # scaling the features changes the raw loss but not the normalised one
    scaled = cross_modal_triplet_loss(feat * 0.01, pids, mods, 0.3, normalize=True)
    torch.testing.assert_close(scaled, got)
    assert not torch.isclose(cross_modal_triplet_loss(feat * 0.01, pids, mods, 0.3), got)


def test_no_valid_anchor_gives_zero_with_a_gradient_and_no_nan():
    feat = torch.randn(4, 3, requires_grad=True)
    pids = torch.tensor([0, 1, 2, 3])  # no cross-modal positive for anyone
    mods = torch.tensor([0, 0, 1, 1])
    loss = cross_modal_triplet_loss(feat, pids, mods, 0.3)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feat.grad, torch.zeros_like(feat))


def test_invalid_anchors_get_no_gradient():
    torch.manual_seed(3)
    feat = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    pids = torch.tensor([0, 1, 2, 0, 1, 5])  # vis 2 and ir 5 have no cross-modal positive
    mods = torch.tensor([0, 0, 0, 1, 1, 1])
    got = cross_modal_triplet_loss(feat, pids, mods, 5.0)
    torch.testing.assert_close(got, loop_reference(feat, pids, mods, 5.0))
    (grad,) = torch.autograd.grad(got, feat)
    (want,) = torch.autograd.grad(loop_reference(feat, pids, mods, 5.0), feat)
    torch.testing.assert_close(grad, want)


def test_the_total_loss_normalises_triplets_by_default_as_the_config_does():
    from csetgraph.config import LossConfig
    from csetgraph.losses import CSETLoss

    assert CSETLoss().normalize_triplet is LossConfig().normalize_triplet is True
