"""Shared references for the MHGA tests: eq. 4-7 written edge by edge, independent of the
layers' code (no scatter, no softmax utility)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F


def _loop_mhga(conv, x, edge_index, edge_type, x_dst=None, *, num_dst=None):
    """Eq. 4-7 with Python loops for an ``MHGAConv``'s parameters.

    ``x_dst=None`` uses ``x`` for the targets; ``num_dst=n`` instead means bipartite input
    ``(x, None)`` with ``n`` targets, whose logits then have no target term.
    """
    heads, c = conv.heads, conv.out_channels
    lin_src = conv.lin if conv.lin is not None else conv.lin_src
    lin_dst = conv.lin if conv.lin is not None else conv.lin_dst
    wh_src = lin_src(x).view(-1, heads, c)
    wh_dst = None if num_dst is not None else lin_dst(x if x_dst is None else x_dst)
    n_dst = num_dst if num_dst is not None else wh_dst.size(0)
    if wh_dst is not None:
        wh_dst = wh_dst.view(-1, heads, c)
    out = torch.zeros(n_dst, heads, c, dtype=x.dtype)
    for i in range(n_dst):
        incoming = [k for k in range(edge_index.size(1)) if edge_index[1, k] == i]
        for hd in range(heads):
            logits = []
            for k in incoming:
                j = edge_index[0, k]
                e = (conv.att_src[0, hd] * wh_src[j, hd]).sum()
                if wh_dst is not None:
                    e = e + (conv.att_dst[0, hd] * wh_dst[i, hd]).sum()
                strength = conv.strengths[int(edge_type[k])]
                logits.append(F.leaky_relu(e, conv.negative_slope) * strength)
            if not logits:
                continue
            weights = [math.exp(v.item()) for v in logits]
            total = sum(weights)
            for w_k, k in zip(weights, incoming, strict=True):
                out[i, hd] += w_k / total * wh_src[edge_index[0, k], hd]
    out = out.reshape(-1, heads * c) if conv.concat else out.mean(dim=1)
    return out + conv.bias


@pytest.fixture
def loop_mhga():
    """``loop_mhga(conv, x, edge_index, edge_type, x_dst=None, *, num_dst=None)``."""
    return _loop_mhga
