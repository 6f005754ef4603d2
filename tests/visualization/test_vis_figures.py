"""Figures of a trained run: each checked against a reference computed another way.

The session's tiny CSET run (with MHGA, two steps on a tiny synthetic SYSU-MM01 set; see
``tiny_run`` in tests/conftest.py) provides the run folder every figure is drawn from.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from csetgraph.data import sysu_mm01
from csetgraph.data.records import load_image
from csetgraph.visualization import (
    FRAME_COLORS,
    class_token_attention,
    compute_heatmaps,
    compute_ranked_lists,
    embed_test_images,
    eval_transform,
    identity_pairs,
    load_run,
    mhga_class_attention,
    modality_distances,
    parse_log,
    plot_curves,
    plot_heatmaps,
    plot_ranked_lists,
    plot_tsne,
    read_scalars,
    split_images,
    tsne_2d,
)
from csetgraph.visualization import heatmap as heatmap_mod
from csetgraph.visualization import ranked as ranked_mod

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tiny_run):
    """The session's tiny trained run (conftest.py), reloaded from its folder."""
    model, cfg = load_run(tiny_run["dir"])
    return {"dir": tiny_run["dir"], "trained": tiny_run["model"], "model": model, "cfg": cfg}


def _px(inches: float, dpi: int) -> int:
    """Pixels of a figure side: Agg truncates inches x dpi (up to float noise)."""
    x = inches * dpi
    return round(x) if abs(x - round(x)) < 1e-6 else math.floor(x)


def _png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        return img.size  # (width, height)


def _embed(model, cfg, records, modality):
    """Reference embeddings: one image at a time through model.embed."""
    tf = eval_transform(model, cfg)
    return torch.cat([model.embed(tf(load_image(r.path))[None], modality) for r in records])


def test_load_run_gives_the_trained_weights(run):
    records = split_images(run["cfg"])["ir"][:3]
    got = _embed(run["model"], run["cfg"], records, "ir")
    want = _embed(run["trained"], run["cfg"], records, "ir")
    torch.testing.assert_close(got, want)


def test_ranked_lists_match_a_loop_and_frames_match_identities(run, tmp_path):
    model, cfg = run["model"], run["cfg"]
    query, gallery = sysu_mm01.test_split(cfg.data.root, "all", 0, 1, "test")
    # Camera-3 queries first, so that the protocol's ignored camera-2 images appear.
    chosen = [i for i, r in enumerate(query) if r.camid == 3][:2] + [
        i for i, r in enumerate(query) if r.camid == 6
    ][:1]
    k = 12  # every non-ignored gallery image of the 4 test ids x 3 other cameras
    lists = compute_ranked_lists(model, cfg, queries=chosen, k=k)

    g_emb = _embed(run["trained"], cfg, gallery, "vis").numpy()
    expected_cols = 1
    for qi, rl in zip(chosen, lists, strict=True):
        q = query[qi]
        q_emb = _embed(run["trained"], cfg, [q], "ir").numpy()[0]
        dist = [1 - float(q_emb @ g) / (np.linalg.norm(q_emb) * np.linalg.norm(g)) for g in g_emb]
        order = sorted(range(len(gallery)), key=lambda j: (dist[j], j))
        want, rank = [], 0
        for j in order:
            if rank == k:
                break
            if q.camid == 3 and gallery[j].camid == 2:
                want.append((gallery[j].path, None, "ignored"))
                continue
            rank += 1
            status = "match" if gallery[j].pid == q.pid else "mismatch"
            want.append((gallery[j].path, rank, status))
        got = [(e.record.path, e.rank, e.status) for e in rl.entries]
        assert got == want
        want_dist = [dist[gallery.index(e.record)] for e in rl.entries]
        np.testing.assert_allclose([e.distance for e in rl.entries], want_dist, atol=1e-5)
        expected_cols = max(expected_cols, 1 + len(want))
    assert any(e.status == "ignored" for rl in lists for e in rl.entries)

    for models in ({"CSET": lists}, {"baseline": lists, "CSET": lists}):
        fig, cells = plot_ranked_lists(models, dpi=50, title="test")
        path = tmp_path / f"ranked_{len(models)}.png"
        fig.savefig(path, dpi=50)
        w, h = _png_size(path)
        rows = len(chosen) * len(models)
        th, tw = ranked_mod.THUMB_SIZE
        b = ranked_mod.BORDER
        row_h = (
            ranked_mod.PAD_HEIGHT
            + ranked_mod.IMAGE_WIDTH * (th + 2 * b) / (tw + 2 * b)
            + ranked_mod.TEXT_HEIGHT
        )
        assert (w, h) == (
            _px(max(expected_cols, ranked_mod.MIN_COLUMNS) * ranked_mod.CELL_WIDTH, 50),
            _px(ranked_mod.HEADER_HEIGHT + rows * row_h, 50),
        )
        # Sample the saved PNG in the middle of each image's left frame.
        pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
        query_of_row = {}
        for cell in cells:
            rec = cell["record"]
            if cell["column"] == 0:
                query_of_row[cell["row"]] = rec
                expected = "query"
            else:
                q = query_of_row[cell["row"]]
                if q.camid == 3 and rec.camid == 2:
                    expected = "ignored"
                else:
                    expected = "match" if rec.pid == q.pid else "mismatch"
            x0, y0, x1, y1 = cell["bbox"]
            frame_px = (x1 - x0) * b / (tw + 2 * b)
            x = int(x0 + frame_px / 2)
            y = int((y0 + y1) / 2)
            assert np.abs(pixels[y, x] - FRAME_COLORS[expected]).max() <= 12, (cell, expected)


def test_block_attention_is_what_the_block_applies(run):
    """Attention captured inside timm's non-fused attention equals the recomputed one."""
    enc = run["model"].ir_encoder
    rec = split_images(run["cfg"])["ir"][0]
    x = eval_transform(run["model"], run["cfg"])(load_image(rec.path))[None]
    captured = []
    hooks = []
    for blk in enc.blocks:
        blk.attn.fused_attn = False
        hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o)))
    try:
        with torch.no_grad():
            tokens = enc.embed_tokens(x)
            ours = []
            for blk in enc.blocks:
                ours.append(heatmap_mod.block_attention(blk, tokens))
                tokens = blk(tokens)
    finally:
        for hk, blk in zip(hooks, enc.blocks, strict=True):
            hk.remove()
            blk.attn.fused_attn = True
    for a, b in zip(ours, captured, strict=True):
        torch.testing.assert_close(a, b)
    # The maps from the captured weights: last block, and rollout as a NumPy loop.
    h, w = enc.grid_size
    last = captured[-1].mean(1)[0, 0, 1:].reshape(h, w)
    torch.testing.assert_close(class_token_attention(enc, x)[0], last)
    mats = [c.mean(1)[0].numpy().astype(np.float64) for c in captured]
    n = mats[0].shape[0]
    roll = np.eye(n)
    for m in mats:
        roll = (0.5 * m + 0.5 * np.eye(n)) @ roll
    got = class_token_attention(enc, x, method="rollout")[0].numpy()
    np.testing.assert_allclose(got, roll[0, 1:].reshape(h, w), rtol=1e-5, atol=1e-6)


def test_mhga_attention_is_the_branch_of_the_forward_pass(run):
    """The class-node row of the conv's attention on the inputs the model itself feeds it."""
    model, cfg = run["model"], run["cfg"]
    recs = split_images(cfg)["vis"][:2]
    tf = eval_transform(model, cfg)
    x = torch.stack([tf(load_image(r.path)) for r in recs])
    seen = []
    hook = model.mhga.conv.register_forward_hook(lambda m, inp, out: seen.append(inp))
    with torch.no_grad():
        model(x, modality="vis")
        hook.remove()
        nodes, rel = seen[0]
        _, att = model.mhga.conv(nodes, rel, return_attention_weights=True)
    h, w = model.mhga.grid_size
    want = att.mean(1)[:, 0, 1:].reshape(2, h, w)
    torch.testing.assert_close(mhga_class_attention(model, x, "vis"), want)


def test_heatmaps_are_normalised_at_the_image_size(run, tmp_path):
    model, cfg = run["model"], run["cfg"]
    pairs = identity_pairs(split_images(cfg), num_ids=2, seed=1)
    assert all(v.pid == i.pid and (v.modality, i.modality) == ("vis", "ir") for v, i in pairs)
    records = [r for p in pairs for r in p]
    maps = {}
    for source in ("attention", "rollout", "mhga"):
        maps[source] = compute_heatmaps(model, cfg, records, source=source)
        for hm in maps[source]:
            with Image.open(hm.record.path) as img:
                assert hm.heat.shape == (img.height, img.width)
                assert hm.image.shape == (img.height, img.width, 3)
            assert hm.heat.min() == 0.0
            assert hm.heat.max() == pytest.approx(1.0) or hm.heat.max() == 0.0
    fig = heatmap_mod.plot_heatmaps({"A": maps["attention"], "B": maps["mhga"]}, dpi=40)
    path = tmp_path / "heat.png"
    fig.savefig(path, dpi=40)
    dh, dw = heatmap_mod.DISPLAY_SIZE
    row_h = heatmap_mod.PAD_HEIGHT + heatmap_mod.IMAGE_WIDTH * dh / dw + heatmap_mod.TEXT_HEIGHT
    assert _png_size(path) == (
        _px(heatmap_mod.LABEL_WIDTH + 4 * heatmap_mod.CELL_WIDTH, 40),
        _px(heatmap_mod.HEADER_HEIGHT + 3 * row_h, 40),
    )
    with pytest.raises(ValueError, match="other images"):
        plot_heatmaps({"A": maps["attention"], "B": maps["mhga"][::-1]})


def test_tsne_distances_match_a_direct_loop(run, tmp_path):
    model, cfg = run["model"], run["cfg"]
    emb = embed_test_images(model, cfg, max_ids=3, seed=0)
    assert len(set(emb.pids.tolist())) == 3 and set(emb.modalities.tolist()) == {"vis", "ir"}
    some = [0, len(emb.records) - 1]
    for i in some:
        r = emb.records[i]
        np.testing.assert_allclose(
            emb.features[i], _embed(run["trained"], cfg, [r], r.modality)[0].numpy(), atol=1e-5
        )
    intra, inter, inter_cross = [], [], []
    f = emb.features.astype(np.float64)
    n = len(f)
    for i in range(n):
        for j in range(n):
            d = math.sqrt(sum((a - b) ** 2 for a, b in zip(f[i], f[j], strict=True)))
            same = emb.pids[i] == emb.pids[j]
            vis_ir = emb.modalities[i] == "vis" and emb.modalities[j] == "ir"
            if same and vis_ir:
                intra.append(d)
            if not same and vis_ir:
                inter_cross.append(d)
            if not same and i < j:
                inter.append(d)
    got = modality_distances(emb.features, emb.pids, emb.modalities)
    assert got["intra_cross"] == pytest.approx(np.mean(intra), abs=1e-6)
    assert got["inter"] == pytest.approx(np.mean(inter), abs=1e-6)
    assert got["inter_cross"] == pytest.approx(np.mean(inter_cross), abs=1e-6)

    coords = tsne_2d(emb.features, seed=0)
    assert coords.shape == (n, 2)
    np.testing.assert_array_equal(coords, tsne_2d(emb.features, seed=0))
    fig = plot_tsne(coords, emb.pids, emb.modalities, distances=got, figsize=(6, 5), dpi=50)
    path = tmp_path / "tsne.png"
    fig.savefig(path, dpi=50)
    assert _png_size(path) == (300, 250)


def test_curves_from_event_files_agree_with_the_log(run, tmp_path):
    tb = read_scalars(run["dir"], source="tensorboard")
    log = parse_log((run["dir"] / "log.txt").read_text())
    assert {"loss/ce", "loss/tri", "loss/total", "train/lr", "test_all/mAP"} <= set(tb)
    assert tb["loss/total"][0].tolist() == [1, 2]
    # The epoch mean is the mean of the per-step values, and the log rounds it to 4 digits.
    np.testing.assert_allclose(tb["epoch_loss/total"][1], [tb["loss/total"][1].mean()], rtol=1e-5)
    for tag in (
        "epoch_loss/ce",
        "epoch_loss/tri",
        "epoch_loss/total",
        "train/lr",
        "train/lr_first",
    ):
        np.testing.assert_array_equal(log[tag][0], tb[tag][0])
        np.testing.assert_allclose(log[tag][1], tb[tag][1], atol=6e-5)
    for source in ("tensorboard", "log"):
        fig = plot_curves(read_scalars(run["dir"], source=source), figsize=(8, 6), dpi=50)
        path = tmp_path / f"curves_{source}.png"
        fig.savefig(path, dpi=50)
        assert _png_size(path) == (400, 300)


def test_parse_log_reads_the_warm_up_rate_and_validation():
    text = (
        "10:00:01 epoch 1/3 | ce 2.5000 tri 0.3000 total 2.7100 | lr 1.00e-03 | from lr "
        "1.00e-04 | 50.0 img/s | 3.0s\n"
        "10:00:04 epoch 2/3 | ce 2.0000 tri 0.2000 total 2.1400 | lr 1.00e-03 | 51.0 img/s | "
        "3.0s | val R-1 12.50 mAP 20.00\n"
        "10:00:05 something else\n"
    )
    log = parse_log(text)
    np.testing.assert_array_equal(log["train/lr"][1], [1e-3, 1e-3])
    np.testing.assert_array_equal(log["train/lr_first"][1], [1e-4, 1e-3])
    np.testing.assert_array_equal(log["epoch_loss/tri"][0], [1, 2])
    np.testing.assert_allclose(log["epoch_loss/total"][1], [2.71, 2.14])
    assert log["val/rank1"][0].tolist() == [2] and log["val/mAP"][1].tolist() == [0.2]


def test_curves_show_the_warm_up_rate_beside_the_epoch_end_rate():
    epochs = np.array([1, 2, 3])
    scalars = {
        "train/lr": (epochs, np.array([1e-3, 1e-3, 1e-4])),
        "train/lr_first": (epochs, np.array([1e-4, 1e-3, 1e-4])),  # epoch 1 warmed up
        "epoch_loss/total": (epochs, np.array([3.0, 2.0, 1.5])),
    }
    lr_axes = plot_curves(scalars).axes[2]
    ends, starts = lr_axes.lines
    np.testing.assert_array_equal(ends.get_ydata(), scalars["train/lr"][1])
    np.testing.assert_array_equal(starts.get_ydata(), scalars["train/lr_first"][1])
    # Without warm-up the start line would repeat the end line: only one line is drawn.
    scalars["train/lr_first"] = scalars["train/lr"]
    assert len(plot_curves(scalars).axes[2].lines) == 1
