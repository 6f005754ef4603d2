"""Triplet distances and SE scores stay fp32 under CPU autocast (bf16, fp16)."""

import pytest
import torch

from csetgraph.graph import select_exchange_edges, similarity_scores
from csetgraph.losses import cross_modal_triplet_loss


def autocast_dtypes():
    """bf16 always; fp16 where this CPU's autocast runs a matmul in it."""
    dtypes = [torch.bfloat16]
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            ok = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    except RuntimeError:
        ok = False
    if ok:
        dtypes.append(torch.float16)
    return dtypes


DTYPES = autocast_dtypes()


def test_the_dtype_list_is_not_empty():
    assert DTYPES and DTYPES[0] == torch.bfloat16


def large_tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = 280 + 100 * torch.rand(2, 2, 17, 1, generator=g)  # token norms in [280, 380]
    x, y = torch.nn.functional.normalize(torch.randn(2, 2, 17, 64, generator=g), dim=-1) * scale
    assert x.norm(dim=-1).min() > 256
    return x, y


@pytest.mark.parametrize("dtype", DTYPES)
def test_se_selection_under_autocast_equals_fp32(dtype):
    x_recv, x_send = large_tokens()
    want = similarity_scores(x_recv, x_send)
    want_edges, want_score = select_exchange_edges(want, 0.25)
    with torch.autocast("cpu", dtype=dtype):
        # the hazard: in the autocast dtype F F^T of such tokens is inf (fp16) or coarse (bf16)
        raw = x_recv @ x_recv.transpose(1, 2)
        assert raw.dtype == dtype
        got = similarity_scores(x_recv, x_send)
        edges, score = select_exchange_edges(got, 0.25)
    if dtype == torch.float16:
        assert not torch.isfinite(raw).all()
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(edges, want_edges)
    torch.testing.assert_close(score, want_score, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [False, True])
def test_triplet_under_autocast_equals_fp32(dtype, normalize):
    g = torch.Generator().manual_seed(1)
    feat = (torch.randn(16, 32, generator=g) * 30).requires_grad_()
    pids = torch.arange(4).repeat_interleave(2).repeat(2)
    mods = torch.tensor([0] * 8 + [1] * 8)
    want = cross_modal_triplet_loss(feat, pids, mods, 0.3, normalize)
    (want_grad,) = torch.autograd.grad(want, feat)
    with torch.autocast("cpu", dtype=dtype):
        got = cross_modal_triplet_loss(feat, pids, mods, 0.3, normalize)
        # features that arrive in the autocast dtype are measured in fp32 too
        low = cross_modal_triplet_loss(feat.to(dtype), pids, mods, 0.3, normalize)
    (grad,) = torch.autograd.grad(got, feat)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=0)
    ref_low = cross_modal_triplet_loss(feat.to(dtype).float(), pids, mods, 0.3, normalize)
    torch.testing.assert_close(low, ref_low)
