"""SE scores (eq. 1-3) against NumPy, and the edge selection against a loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csetgraph.graph import num_selected, select_exchange_edges, similarity_scores


def numpy_scores(f: np.ndarray, g: np.ndarray, alpha: float, tau: float) -> np.ndarray:
    """Eq. 1-3 for one pair, written element by element from the paper."""
    n = f.shape[0]
    logits = f @ f.T / tau
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    s = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            dot = f[i] @ g[j]
            jac = 1.0 - dot / (f[i] @ f[i] + g[j] @ g[j] - dot)
            s[i, j] = alpha * (1.0 - jac) + (1.0 - alpha) * a[i, j]
    return s


@pytest.mark.parametrize(("alpha", "tau"), [(0.7, 1.0), (0.3, 4.0)])
def test_scores_match_numpy_reference(alpha, tau):
    gen = torch.Generator().manual_seed(0)
    x_recv = torch.randn(2, 6, 5, generator=gen, dtype=torch.float64)
    x_send = torch.randn(2, 6, 5, generator=gen, dtype=torch.float64)
    scores = similarity_scores(x_recv, x_send, alpha=alpha, temperature=tau)
    assert scores.shape == (2, 6, 6)
    for b in range(2):
        ref = numpy_scores(x_recv[b].numpy(), x_send[b].numpy(), alpha, tau)
        np.testing.assert_allclose(scores[b].numpy(), ref, rtol=1e-10, atol=1e-12)


def test_scores_hand_worked_and_zero_denominator_guard():
    # f = (1, 0), g = (1, 0): Tanimoto 1. f = (1, 0), g = (0, 0): 0 / 1 = 0.
    # Zero receiving token with zero sender: denominator 0 is clamped, giving 1 - J = 0.
    x_recv = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    x_send = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    s = similarity_scores(x_recv, x_send, alpha=1.0)
    assert torch.isfinite(s).all()
    assert torch.allclose(s, torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    # alpha = 0 leaves the intra-modality softmax: rows of x_recv x_recv^T = [[1, 0], [0, 0]].
    a = similarity_scores(x_recv, x_send, alpha=0.0)
    e = np.e
    assert torch.allclose(a[0, 0], torch.tensor([e / (e + 1), 1 / (e + 1)]))
    assert torch.allclose(a[0, 1], torch.tensor([0.5, 0.5]))


def test_scores_reject_unbatched_input():
    with pytest.raises(ValueError, match="unsqueeze"):
        similarity_scores(torch.randn(4, 3), torch.randn(4, 3))


@pytest.mark.parametrize(
    ("patches", "ratio", "expected"),
    [(128, 0.1, 12), (128, 0.25, 32), (100, 0.29, 29), (8, 0.0, 0), (8, 1.0, 8), (3, 0.3, 0)],
)
def test_num_selected_is_floor(patches, ratio, expected):
    assert num_selected(patches, ratio) == expected


def test_selection_loop_reference_count_and_class_token_exclusion():
    b, n, ratio = 3, 9, 0.5  # 8 patches -> 4 edges per pair
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(b, n, n, generator=gen)
    scores[:, 0, :] = 10.0  # class token rows and columns score highest: must still be skipped
    scores[:, :, 0] = 10.0
    edge_index, edge_score = select_exchange_edges(scores, ratio)
    assert edge_index.shape == (2, b * 4)
    assert edge_score.shape == (b * 4,)
    sender, receiver = edge_index
    assert torch.all(sender % n != 0) and torch.all(receiver % n != 0)
    for k in range(b):
        # Loop reference: best partner of every patch receiver, then the 4 best receivers.
        best = {i: max(range(1, n), key=lambda j, i=i: scores[k, i, j].item()) for i in range(1, n)}
        ranked = sorted(best, key=lambda i: -scores[k, i, best[i]].item())[:4]
        expected = [(k * n + best[i], k * n + i) for i in ranked]
        got = list(
            zip(
                sender[k * 4 : (k + 1) * 4].tolist(),
                receiver[k * 4 : (k + 1) * 4].tolist(),
                strict=True,
            )
        )
        assert got == expected
        ref_scores = [scores[k, i, best[i]].item() for i in ranked]
        assert edge_score[k * 4 : (k + 1) * 4].tolist() == pytest.approx(ref_scores)
    # Batch offsets: every edge stays within its own pair.
    assert torch.equal(sender // n, receiver // n)


def test_selection_receivers_are_unique():
    scores = torch.rand(2, 17, 17)
    edge_index, _ = select_exchange_edges(scores, 1.0)
    assert edge_index.size(1) == 2 * 16
    assert edge_index[1].unique().numel() == edge_index.size(1)


def test_selection_rejects_bad_input():
    with pytest.raises(ValueError, match="ratio"):
        select_exchange_edges(torch.rand(1, 4, 4), 1.5)
    with pytest.raises(ValueError, match=r"\(B, N, N\)"):
        select_exchange_edges(torch.rand(4, 4), 0.5)


def numpy_intra(f: np.ndarray, reading: str, tau: float) -> np.ndarray:
    """``A`` of eq. 1 for one image under each reading, element by element."""
    n, d = f.shape
    logits = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            dot = f[i] @ f[j]
            if reading == "scaled":
                dot /= np.sqrt(d)
            if reading == "cosine":
                dot /= np.linalg.norm(f[i]) * np.linalg.norm(f[j])
            logits[i, j] = dot / tau
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    return a / a.sum(axis=1, keepdims=True)


READINGS = ("dot", "scaled", "cosine")


def test_the_reading_list_is_not_empty():
    assert READINGS


@pytest.mark.parametrize("reading", READINGS)
def test_eq1_readings_match_numpy_and_leave_the_jaccard_term_alone(reading):
    gen = torch.Generator().manual_seed(2)
    x_recv = 3 * torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    x_send = 3 * torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    a = similarity_scores(x_recv, x_send, alpha=0.0, temperature=0.5, similarity=reading)
    t = similarity_scores(x_recv, x_send, alpha=1.0, similarity=reading)
    t_dot = similarity_scores(x_recv, x_send, alpha=1.0, similarity="dot")
    torch.testing.assert_close(t, t_dot)  # eq. 2 always reads the raw tokens
    for b in range(2):
        want = numpy_intra(x_recv[b].numpy(), reading, 0.5)
        np.testing.assert_allclose(a[b].numpy(), want, rtol=1e-10, atol=1e-12)


def test_cosine_reading_hand_worked():
    # Tokens (3, 0) and (0, 4): cosines [[1, 0], [0, 1]] whatever the norms, so each row of A
    # is softmax(1, 0) = (e / (e + 1), 1 / (e + 1)); the raw product (9, 0 / 0, 16) would give
    # rows of 0.9999 on the diagonal.
    x = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])
    a = similarity_scores(x, x, alpha=0.0, similarity="cosine")
    e = np.e
    hi, lo = e / (e + 1), 1 / (e + 1)
    assert torch.allclose(a[0], torch.tensor([[hi, lo], [lo, hi]]))
    raw = similarity_scores(x, x, alpha=0.0, similarity="dot")
    assert raw[0, 0, 0] > 0.9998 and raw[0, 1, 1] > 0.99999


def test_unknown_reading_is_refused():
    with pytest.raises(ValueError, match="similarity must be one of"):
        similarity_scores(torch.randn(1, 3, 2), torch.randn(1, 3, 2), similarity="euclid")
