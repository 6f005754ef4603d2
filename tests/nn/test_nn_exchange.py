"""SimilarityExchange: which tokens change, into what, and where the gradients go."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csetgraph.nn import SimilarityExchange, exchange_tokens


def numpy_best_partners(f: np.ndarray, g: np.ndarray, alpha: float, k: int) -> dict[int, int]:
    """Loop reference of eq. 1-3 plus selection for one pair: {receiver: sender} over patches."""
    logits = f @ f.T
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    dot = f @ g.T
    sq_f, sq_g = (f * f).sum(1)[:, None], (g * g).sum(1)[None, :]
    s = alpha * dot / (sq_f + sq_g - dot) + (1 - alpha) * a
    n = f.shape[0]
    best = {i: 1 + int(np.argmax(s[i, 1:])) for i in range(1, n)}
    ranked = sorted(best, key=lambda i: -s[i, best[i]])[:k]
    return {i: best[i] for i in ranked}


def test_exchange_tokens_replaces_receivers_out_of_place():
    x_recv = torch.zeros(2, 3, 2)
    x_send = torch.arange(12.0).view(2, 3, 2)
    edge_index = torch.tensor([[2, 4], [1, 5]])  # pair 0: 2 -> 1; pair 1: 4 (pos 1) -> 5 (pos 2)
    out = exchange_tokens(x_recv, x_send, edge_index)
    expected = torch.zeros(2, 3, 2)
    expected[0, 1] = x_send[0, 2]
    expected[1, 2] = x_send[1, 1]
    assert torch.equal(out, expected)
    assert torch.all(x_recv == 0)  # inputs untouched


@pytest.mark.parametrize("direction", ["i2v", "v2i", "both"])
def test_mixed_stream_differs_exactly_at_selected_receivers(direction):
    torch.manual_seed(0)
    b, n, d, ratio = 3, 9, 4, 0.5  # 8 patches -> 4 receivers per pair and direction
    x_vis, x_ir = (
        torch.randn(b, n, d, dtype=torch.float64),
        torch.randn(b, n, d, dtype=torch.float64),
    )
    se = SimilarityExchange(alpha=0.7, ratio=ratio, direction=direction)
    mixed_vis, mixed_ir, info = se(x_vis, x_ir)
    # i2v: infrared tokens receive visible features (rows built with A_ir); v2i the reverse.
    cases = {"i2v": (x_ir, x_vis, mixed_ir), "v2i": (x_vis, x_ir, mixed_vis)}
    for name, (recv, send, mixed) in cases.items():
        if direction not in (name, "both"):
            assert info[name] is None
            assert torch.equal(mixed, recv)
            continue
        edge_index = info[name].edge_index
        assert edge_index.shape == (2, b * 4)
        for k in range(b):
            ref = numpy_best_partners(recv[k].numpy(), send[k].numpy(), 0.7, 4)
            changed = (mixed[k] != recv[k]).any(-1).nonzero().flatten().tolist()
            assert sorted(changed) == sorted(ref)  # exactly the selected receivers changed
            for i, j in ref.items():
                assert torch.equal(mixed[k, i], send[k, j])  # ...into their best partner
            assert torch.equal(mixed[k, 0], recv[k, 0])  # class token never exchanged
    if direction == "both":
        # Both directions read the pre-exchange features: v2i senders are clean ir tokens.
        senders = info["v2i"].edge_index[0]
        receivers = info["v2i"].edge_index[1]
        assert torch.equal(mixed_vis.view(-1, d)[receivers], x_ir.view(-1, d)[senders])


def test_gradient_reaches_senders():
    torch.manual_seed(1)
    x_vis = torch.randn(2, 9, 4, requires_grad=True)
    x_ir = torch.randn(2, 9, 4, requires_grad=True)
    se = SimilarityExchange(ratio=0.25, direction="i2v")
    _, mixed_ir, info = se(x_vis, x_ir)
    weights = torch.randn_like(mixed_ir)
    (mixed_ir * weights).sum().backward()
    sender, receiver = info["i2v"].edge_index
    expected_vis = torch.zeros(2 * 9, 4)
    expected_vis[sender] = weights.view(-1, 4)[receiver]
    assert torch.allclose(x_vis.grad.view(-1, 4), expected_vis)
    expected_ir = weights.view(-1, 4).clone()
    expected_ir[receiver] = 0.0  # replaced tokens no longer depend on their old value
    assert torch.allclose(x_ir.grad.view(-1, 4), expected_ir)


def test_none_and_zero_ratio_are_identity():
    x_vis, x_ir = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mixed_vis, mixed_ir, info = SimilarityExchange(direction="none")(x_vis, x_ir)
    assert mixed_vis is x_vis and mixed_ir is x_ir and info == {"i2v": None, "v2i": None}
    mixed_vis, mixed_ir, info = SimilarityExchange(ratio=0.0)(x_vis, x_ir)
    assert torch.equal(mixed_vis, x_vis) and torch.equal(mixed_ir, x_ir)
    assert info["i2v"].edge_index.shape == (2, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        SimilarityExchange(direction="sideways")
    with pytest.raises(ValueError, match="ratio"):
        SimilarityExchange(ratio=2.0)
    with pytest.raises(ValueError, match="aligned pairs"):
        SimilarityExchange()(torch.randn(2, 5, 3), torch.randn(3, 5, 3))
    assert "direction='both'" in repr(SimilarityExchange())
