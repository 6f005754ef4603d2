"""SE health statistics (ExchangeStats) against values worked out by hand on two tiny pairs."""

from __future__ import annotations

import math

import pytest
import torch

from csetgraph.nn import SimilarityExchange, exchange_statistics

# One class token and two patches of width 2. The receiving tokens are the same in both pairs:
# F F^T = diag(0, 1, 1), so each patch row of A = softmax(F F^T) is (1, e, 1) / (e + 2) in
# some order and A[i, i] = e / (e + 2) for both patches.
RECV = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
# Pair 0 sends the patches swapped (Tanimoto 1 across, 0 at the own position); pair 1 sends
# the receiving tokens themselves (Tanimoto 1 at the own position, 0 across).
SEND = torch.stack([RECV[[0, 2, 1]], RECV])
A_DIAG = math.e / (math.e + 2)
A_OFF = 1 / (math.e + 2)


def test_stats_of_a_hand_worked_batch():
    # alpha 0.5: pair 0 patch 1 scores 0.5 * 0 + 0.5 * A_DIAG = 0.288 at its own position and
    # 0.5 * 1 + 0.5 * A_OFF = 0.606 across -> takes the other position; pair 1 scores
    # 0.5 * 1 + 0.5 * A_DIAG = 0.788 at its own position -> same position. Ratio 1: both
    # patches of each pair receive.
    se = SimilarityExchange(alpha=0.5, ratio=1.0)
    edges = se.select(RECV.expand(2, 3, 2), SEND)
    stats = edges.stats
    assert stats.tokens_per_image.item() == 2.0
    assert stats.a_diagonal.item() == pytest.approx(A_DIAG, rel=1e-6)
    assert stats.same_position.item() == 0.5  # pair 1's two edges of four
    expected_score = (2 * (0.5 + 0.5 * A_OFF) + 2 * (0.5 + 0.5 * A_DIAG)) / 4
    assert stats.mean_score.item() == pytest.approx(expected_score, rel=1e-6)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats)


@pytest.mark.parametrize(("alpha", "same"), [(0.0, 1.0), (1.0, 0.5)])
def test_same_position_share_follows_alpha(alpha, same):
    # A alone (alpha 0) picks the diagonal in both pairs; Tanimoto alone (alpha 1) picks the
    # cross position in pair 0 and the own one in pair 1.
    stats = SimilarityExchange(alpha=alpha, ratio=1.0).select(RECV.expand(2, 3, 2), SEND).stats
    assert stats.same_position.item() == same
    assert stats.a_diagonal.item() == pytest.approx(A_DIAG, rel=1e-6)  # A does not need alpha


def test_temperature_enters_the_diagonal_of_a():
    # tau = 2: the patch rows of F F^T / tau are (0, 0.5, 0) -> A[i, i] = e^0.5 / (e^0.5 + 2).
    stats = SimilarityExchange(ratio=1.0, temperature=2.0).select(RECV[None], SEND[:1]).stats
    assert stats.a_diagonal.item() == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 2), 1e-6)


def test_forward_reports_each_direction_and_half_ratio():
    # ratio 0.5 of 2 patches: one token per image; i2v: the infrared tokens receive.
    se = SimilarityExchange(alpha=0.5, ratio=0.5, direction="both")
    _, _, info = se(SEND, RECV.expand(2, 3, 2))  # x_vis = SEND, x_ir = RECV
    i2v = info["i2v"].stats
    assert i2v.tokens_per_image.item() == 1.0
    assert i2v.a_diagonal.item() == pytest.approx(A_DIAG, rel=1e-6)  # A of the ir receivers
    # The top edge of each pair: pair 0 across (0.606), pair 1 own position (0.788).
    assert i2v.same_position.item() == 0.5
    assert i2v.mean_score.item() == pytest.approx((1 + 0.5 * A_OFF + 0.5 * A_DIAG) / 2, 1e-6)
    assert info["v2i"].stats is not None


def test_no_selected_edge_gives_zeros_not_nan():
    edge_index = torch.zeros(2, 0, dtype=torch.long)
    a = torch.full((2, 3, 3), 1 / 3)
    stats = exchange_statistics(edge_index, torch.zeros(0), a)
    assert stats.tokens_per_image.item() == 0.0
    assert stats.same_position.item() == 0.0 and stats.mean_score.item() == 0.0
    assert stats.a_diagonal.item() == pytest.approx(1 / 3)
