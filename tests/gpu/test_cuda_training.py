"""Training on CUDA: bf16 autocast against fp32 (the fp32 islands of SE and the triplet loss,
then a whole step of the shrunk SYSU-MM01 recipe), and a run with ``train.device=auto``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine import train
from csetgraph.engine.distributed import autocast_context
from csetgraph.engine.runs import eval_transform
from csetgraph.evaluation.features import extract_features
from csetgraph.graph import select_exchange_edges, similarity_scores
from csetgraph.losses import build_criterion, cross_modal_triplet_loss
from csetgraph.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: The SYSU-MM01 recipe (SE after every block, CA, MHGA, drop path, dropout) shrunk to seconds.
SHRUNK_SYSU = [
    "model.pretrained=",
    "model.embed_dim=48",
    "model.depth=3",
    "model.num_heads=6",
    "model.se.layers=[0,1]",
    "data.height=96",
    "data.width=48",
]
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def test_the_dtype_list_is_not_empty():
    assert AUTOCAST_DTYPES


def large_tokens(device, seed=0):
    """Token sets whose norms (280-380) overflow fp16 and coarsen bf16 in ``F F^T``."""
    g = torch.Generator().manual_seed(seed)
    scale = 280 + 100 * torch.rand(2, 2, 17, 1, generator=g)
    x, y = torch.nn.functional.normalize(torch.randn(2, 2, 17, 64, generator=g), dim=-1) * scale
    return x.to(device), y.to(device)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
def test_se_selection_under_cuda_autocast_equals_fp32_and_the_cpu(cuda, dtype):
    x_recv, x_send = large_tokens(cuda)
    want = similarity_scores(x_recv, x_send)
    want_edges, want_score = select_exchange_edges(want, 0.25)
    with torch.autocast("cuda", dtype=dtype):
        raw = x_recv @ x_recv.transpose(1, 2)
        got = similarity_scores(x_recv, x_send)
        edges, score = select_exchange_edges(got, 0.25)
    assert raw.dtype == dtype  # autocast is on: the scores are fp32 by the island alone
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(edges, want_edges)
    torch.testing.assert_close(score, want_score, rtol=0, atol=0)
    # The CPU computes the same scores and picks the same edges.
    cpu_scores = similarity_scores(x_recv.cpu(), x_send.cpu())
    cpu_edges, _ = select_exchange_edges(cpu_scores, 0.25)
    torch.testing.assert_close(got.cpu(), cpu_scores, rtol=1e-5, atol=1e-5)
    assert torch.equal(edges.cpu(), cpu_edges)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
def test_triplet_under_cuda_autocast_equals_fp32_and_the_cpu(cuda, dtype):
    g = torch.Generator().manual_seed(1)
    feat = (torch.randn(16, 32, generator=g) * 30).to(cuda).requires_grad_()
    pids = torch.arange(4).repeat_interleave(2).repeat(2).to(cuda)
    mods = torch.tensor([0] * 8 + [1] * 8).to(cuda)
    want = cross_modal_triplet_loss(feat, pids, mods, 0.3, True)
    (want_grad,) = torch.autograd.grad(want, feat)
    with torch.autocast("cuda", dtype=dtype):
        got = cross_modal_triplet_loss(feat, pids, mods, 0.3, True)
    (grad,) = torch.autograd.grad(got, feat)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=0)
    on_cpu = cross_modal_triplet_loss(feat.detach().cpu(), pids.cpu(), mods.cpu(), 0.3, True)
    torch.testing.assert_close(got.detach().cpu(), on_cpu, rtol=1e-5, atol=1e-6)


def shrunk_parts(device):
    """The shrunk recipe's model (seeded), loss and one batch of 4 ids x 2 aligned pairs."""
    cfg = load_config(CONFIGS / "sysu_mm01.yaml", SHRUNK_SYSU)
    torch.manual_seed(0)
    size = (cfg.data.height, cfg.data.width)
    model = build_model(cfg.model, 8, size).to(device).train()
    g = torch.Generator().manual_seed(3)
    vis, ir = (torch.randn(8, 3, *size, generator=g).to(device) for _ in range(2))
    pids = torch.arange(4).repeat_interleave(2).repeat(2).to(device)
    return cfg, model, build_criterion(cfg.loss), (vis, ir, pids)


def forward_loss(model, criterion, batch, amp, device):
    """Forward and loss under ``train.amp=amp``, with the same dropout and drop-path draws."""
    vis, ir, pids = batch
    amp_ctx, _ = autocast_context(amp, device)
    torch.manual_seed(1)
    with amp_ctx:
        out = model(vis, ir)
        loss, terms, stats = criterion(out, pids, return_stats=True)
    terms["pos_dist"], terms["neg_dist"] = stats.triplet.pos_dist, stats.triplet.neg_dist
    return out, loss, terms


def receivers(out) -> list[set[int]]:
    """The receiving token positions of every SE layer and direction."""
    return [
        set(edges.edge_index[1].tolist())
        for layer in out.se_info
        for edges in layer.values()
        if edges is not None
    ]


@pytest.mark.cuda
def test_a_bf16_step_on_cuda_is_finite_and_close_to_fp32(cuda):
    _, model, criterion, batch = shrunk_parts(cuda)
    out32, loss32, terms32 = forward_loss(model, criterion, batch, "off", cuda)
    grads32 = torch.autograd.grad(
        loss32, [p for p in model.parameters() if p.requires_grad], allow_unused=True
    )
    out16, loss16, terms16 = forward_loss(model, criterion, batch, "bf16", cuda)
    grads16 = torch.autograd.grad(
        loss16, [p for p in model.parameters() if p.requires_grad], allow_unused=True
    )

    assert out16.logits.dtype == torch.bfloat16 and out32.logits.dtype == torch.float32
    assert set(terms16) == set(terms32)
    assert {"ce", "tri", "cd", "total", "pos_dist", "neg_dist"} <= set(terms32)
    for name in terms32:
        assert torch.isfinite(terms16[name]), name
        assert terms16[name].dtype == torch.float32, name  # losses come out in fp32
    # Selection: the same tokens exchanged, up to boundary ties moved by bf16 noise upstream.
    sets16, sets32 = receivers(out16), receivers(out32)
    assert len(sets32) == 4  # two SE layers, both directions
    agree = sum(len(a & b) for a, b in zip(sets16, sets32, strict=True))
    assert agree >= 0.9 * sum(len(b) for b in sets32)
    # Triplet and identity values within bf16's error, and gradients pointing the same way.
    # Eq. 9's squared distances are unnormalised: bf16 features carry a relative error, so the
    # mined distances are compared relatively, and the hinge against the distances' scale (on
    # the H200, ViT-S at random init: |tri16 - tri32| was 0.11, an absolute 0.01 was too tight).
    for name in ("pos_dist", "neg_dist"):
        torch.testing.assert_close(terms16[name], terms32[name], rtol=0.03, atol=0)
    scale = float(terms32["neg_dist"])
    torch.testing.assert_close(terms16["tri"], terms32["tri"], rtol=0, atol=0.03 * scale)
    torch.testing.assert_close(terms16["ce"], terms32["ce"], rtol=0.02, atol=0)
    flat = [
        (a.flatten(), b.flatten()) for a, b in zip(grads16, grads32, strict=True) if b is not None
    ]
    g16, g32 = torch.cat([a for a, _ in flat]), torch.cat([b for _, b in flat])
    assert torch.isfinite(g16).all()
    assert torch.nn.functional.cosine_similarity(g16.float(), g32, dim=0) > 0.99


@pytest.mark.cuda
def test_fp32_on_cuda_matches_the_cpu(cuda):
    _, model, criterion, batch = shrunk_parts(cuda)
    out, _, terms = forward_loss(model.eval(), criterion, batch, "off", cuda)
    cpu_model = model.to("cpu")
    cpu_batch = tuple(t.cpu() for t in batch)
    cpu_out, _, cpu_terms = forward_loss(cpu_model, criterion, cpu_batch, "off", "cpu")
    # eval mode (no dropout): the devices differ only in rounding (TF32 convolutions included),
    # which may move a tie at the selection's boundary
    sets, cpu_sets = receivers(out), receivers(cpu_out)
    assert len(sets) == 4
    agree = sum(len(a & b) for a, b in zip(sets, cpu_sets, strict=True))
    assert agree >= 0.9 * sum(len(b) for b in cpu_sets)
    for name in terms:
        torch.testing.assert_close(terms[name].cpu(), cpu_terms[name], rtol=5e-3, atol=5e-3)


@pytest.mark.cuda
def test_device_auto_trains_and_evaluates_on_the_first_gpu(tiny_config, tmp_path):
    cfg = load_config(None, tiny_config(tmp_path, "auto", "train.device=auto", "eval.trials=1"))
    out = train(cfg, progress=False)
    model, run_dir = out["model"], out["run_dir"]
    assert {p.device for p in model.parameters()} == {torch.device("cuda", 0)}
    assert "device cuda:0" in (run_dir / "log.txt").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"all", "indoor", "mechanisms"}
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # The trained model embeds on the GPU as on the CPU (fp32 both).
    from csetgraph.data.sysu_mm01 import all_records

    saved = load_config(run_dir / "config.yaml")
    records = all_records(saved.data.root, "test")["ir"][:8]
    tf = eval_transform(model, saved)
    gpu = extract_features(model, records, "ir", transform=tf, device="cuda:0", amp="off",
                           progress=False)  # fmt: skip
    cpu = extract_features(model.to("cpu"), records, "ir", transform=tf, amp="off", progress=False)
    assert torch.nn.functional.cosine_similarity(gpu.cpu(), cpu, dim=1).min() > 0.999


@pytest.mark.cuda
def test_fp16_steps_through_the_grad_scaler_on_cuda(cuda):
    """``train.amp=fp16`` (GPUs without native bf16): steps the scaler skips after an overflow
    leave the weights alone; the others update them, with finite losses throughout."""
    _, model, criterion, (vis, ir, pids) = shrunk_parts(cuda)
    amp_ctx, scaler = autocast_context("fp16", cuda)
    assert isinstance(scaler, torch.amp.GradScaler)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    updated = 0
    for _ in range(12):
        before = [p.detach().clone() for p in model.parameters()]
        scale = scaler.get_scale()
        with amp_ctx:
            loss, _ = criterion(model(vis, ir), pids)
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        changed = any(
            not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)
        )
        skipped = scaler.get_scale() < scale  # the scale halves after an overflow
        assert changed != skipped
        updated += changed
    assert updated >= 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
