"""Mechanism health in a training run: names, the verdicts at their thresholds, and what the
trainer writes (metrics.json, log.txt, TensorBoard, last.pt)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine import health as mech
from csetgraph.engine.trainer import _Window
from csetgraph.losses import build_criterion
from csetgraph.models import build_model
from csetgraph.visualization import read_scalars

STATIC = {"triplet_margin": 0.3, "triplet_feature": "heads", "num_classes": 32}


def stats(**kw) -> dict[str, float]:
    """A healthy set of epoch means, with the given keys changed."""
    base = {
        "se/block2/i2v/tokens_per_image": 3.0,
        "se/block2/i2v/a_diagonal": 0.05,
        "se/block2/i2v/same_position": 0.2,
        "se/block2/i2v/mean_score": 0.4,
        "se/i2v/class_cosine": 0.9,
        "ca/entropy": 1.0,
        "ca/distill": 0.5,
        "ca/ce": 2.0,
        "triplet/loss": 0.1,
        "triplet/active": 0.4,
        "triplet/pos_dist": 0.5,
        "triplet/neg_dist": 0.9,
        "mhga/same": 0.3,
        "mhga/adjacent": 0.3,
        "mhga/distant": 0.4,
        "mhga/uniform_same": 0.1,
        "mhga/uniform_adjacent": 0.2,
        "mhga/uniform_distant": 0.7,
    }
    return base | {k.replace("__", "/"): v for k, v in kw.items()}


def verdict(means, mechanism):
    (found,) = [v for v in mech.verdicts(means, STATIC) if v[0] == mechanism]
    return found[1], found[2]


def test_healthy_numbers_are_alive():
    found = mech.verdicts(stats(), STATIC)
    assert [(m, lv) for m, lv, _ in found] == [
        ("SE", "alive"), ("CA", "alive"), ("triplet", "alive"), ("MHGA", "alive"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("same", "level", "words"),
    [
        (0.97, "degenerate", "97% of exchanges are same-position: the exchange is a positional"),
        (0.90, "degenerate", "positional copy"),
        (0.89, "weak", "89% of exchanges are same-position: mostly positional"),
        (0.50, "alive", "50% same-position"),
    ],
)
def test_se_same_position_thresholds(same, level, words):
    lv, findings = verdict(stats(se__block2__i2v__same_position=same), "SE")
    assert lv == level and words in findings[0] and "i2v after block 2" in findings[0]


def test_se_a_diagonal_and_class_cosine():
    lv, findings = verdict(stats(se__block2__i2v__a_diagonal=0.5, se__i2v__class_cosine=0.98), "SE")
    assert lv == "weak"
    assert "A's diagonal holds 0.50" in " ".join(findings)
    assert "cosine 0.980 from the clean one" in findings[0]  # worst first
    lv, findings = verdict(stats(se__block2__i2v__a_diagonal=0.49), "SE")
    assert "diagonal" not in " ".join(findings)


def test_ca_thresholds():
    uniform = 0.9 * math.log(32)
    lv, findings = verdict(stats(ca__entropy=uniform), "CA")
    assert lv == "degenerate" and "near uniform" in findings[0] and "0.90 of log 32" in findings[0]
    lv, _ = verdict(stats(ca__entropy=uniform - 0.01), "CA")
    assert lv == "alive"
    lv, findings = verdict(stats(ca__distill=0.0999, ca__ce=2.0), "CA")  # ratio 0.04995
    assert lv == "weak" and "little to distil" in findings[0]
    assert verdict(stats(ca__distill=0.1, ca__ce=2.0), "CA")[0] == "alive"  # ratio 0.05


@pytest.mark.parametrize(
    ("loss", "level", "words"),
    [
        (0.309, "degenerate", "1.03x its margin"),
        (0.27, "degenerate", "sits at its margin"),  # 0.9 x 0.3
        (0.269, "alive", "0.90x its margin"),
        (0.34, "weak", "1.13x its margin"),
    ],
)
def test_triplet_thresholds(loss, level, words):
    lv, findings = verdict(stats(triplet__loss=loss), "triplet")
    assert lv == level and words in findings[0]
    assert "trains the W' heads" in findings[0]


def test_mhga_uniform_attention_is_weak():
    even = dict(mhga__same=0.105, mhga__adjacent=0.19, mhga__distant=0.705)  # within 10%
    lv, findings = verdict(stats(**even), "MHGA")
    assert lv == "weak" and "relations make no difference" in findings[0]
    assert "same 0.105 (1.05x uniform)" in findings[0]
    assert verdict(stats(mhga__same=0.111), "MHGA")[0] == "alive"  # 1.11x


def test_missing_mechanisms_get_no_verdict():
    only = {k: v for k, v in stats().items() if k.startswith("triplet/")}
    assert [v[0] for v in mech.verdicts(only, STATIC)] == ["triplet"]


def test_summary_line_and_section():
    line = mech.summary_line(stats())
    assert line.startswith("SE b2:i2v same 20% diagA 0.05 tok 3, cos i2v 0.900 | CA cd/ce 0.250")
    assert "tri active 40% d+ 0.500 d- 0.900" in line and line.endswith(
        "MHGA sam 0.30 adj 0.30 dis 0.40"
    )
    history = [{"epoch": 1, "stats": stats(triplet__loss=0.3)}, {"epoch": 2, "stats": stats()}]
    section = mech.mechanisms_section(history, STATIC)
    assert section["last"] == stats() and section["static"] == STATIC
    assert [v["level"] for v in section["verdicts"]] == ["alive"] * 4


def test_step_statistics_names_every_statistic(tiny_overrides):
    torch.manual_seed(0)
    cfg = load_config(None, [*tiny_overrides, "model.depth=3", "model.se.layers=[0, 1]"])
    model = build_model(cfg.model, 4, (32, 16))
    out = model(torch.randn(2, 3, 32, 16), torch.randn(2, 3, 32, 16))
    pids = torch.tensor([0, 1, 0, 1])
    _, terms, loss_stats = build_criterion(cfg.loss)(out, pids, return_stats=True)
    flat = mech.step_statistics(out, terms, loss_stats)
    se = {f"se/block{b}/{d}/{s}" for b in (0, 1) for d in ("i2v", "v2i")
          for s in ("tokens_per_image", "a_diagonal", "same_position", "mean_score")}  # fmt: skip
    others = {"se/i2v/class_cosine", "se/v2i/class_cosine", "ca/entropy", "ca/distill", "ca/ce",
              "triplet/loss", "triplet/active", "triplet/pos_dist", "triplet/neg_dist"}  # fmt: skip
    mhga = {f"mhga/{p}{r}" for p in ("", "uniform_") for r in mech.RELATIONS}
    heads = {f"triplet_heads/{s}" for s in ("loss", "active", "pos_dist", "neg_dist")}
    expected = se | others | mhga | (heads if loss_stats.head_triplet is not None else set())
    assert set(flat) == expected
    assert flat["ca/ce"].item() == terms["ce"].item()
    assert flat["triplet/loss"].item() == terms["tri"].item()
    assert flat["triplet/active"].item() == loss_stats.triplet.active.item()
    assert flat["se/i2v/class_cosine"].item() == out.health.class_cosine["ir"].item()
    assert all(v.dim() == 0 and not v.requires_grad for v in flat.values())
    static = mech.static_info(out, 0.3)
    assert static["triplet_feature"] in mech.TRIPLET_FEATURES
    assert static | {"triplet_feature": "x"} == {
        "triplet_margin": 0.3, "triplet_feature": "x", "num_classes": 4, "se_layers": [0, 1],
    }  # fmt: skip


def test_a_second_triplet_term_on_the_heads_is_named_and_judged():
    means = stats(**{f"triplet_heads__{k}": v for k, v in
                     dict(loss=0.3, active=1.0, pos_dist=0.6, neg_dist=0.6).items()})  # fmt: skip
    lv, findings = verdict(means, mech.HEADS)
    assert lv == "degenerate" and "trains the W' heads" in findings[0]
    assert verdict(means, "triplet")[0] == "alive"
    assert "tri_heads active 100% d+ 0.600 d- 0.600" in mech.summary_line(means)


def test_window_reads_loss_terms_and_health_in_one_go():
    w = _Window()
    for i in range(3):
        w.add(torch.tensor(float(i)), {"ce": torch.tensor(1.0)}, {"se/x": torch.tensor(0.5 * i)})
    loss, terms, health = w.read()
    assert (loss, terms, health) == (3.0, {"ce": 3.0}, {"se/x": 1.5})


# ------------------------------------------------------------------ what a run writes


def test_tiny_run_writes_the_mechanisms_everywhere(tiny_run):
    run = tiny_run["dir"]
    section = json.loads((run / "metrics.json").read_text())["mechanisms"]
    (epoch,) = section["epochs"]
    assert epoch["epoch"] == 1 and section["last"] == epoch["stats"]
    s = epoch["stats"]
    # 32 x 16 images, 16-pixel patches: 2 x 1 patches, N = 3; ratio 0.5 -> one token each.
    for d in ("i2v", "v2i"):
        assert s[f"se/block0/{d}/tokens_per_image"] == 1.0
        assert 0.0 <= s[f"se/block0/{d}/same_position"] <= 1.0
        assert -1.0 <= s[f"se/{d}/class_cosine"] <= 1.0 + 1e-6
    # The uniform masses of a 3-token sequence graph, by hand: 1/3, 4/9, 2/9.
    for rel, value in zip(mech.RELATIONS, (1 / 3, 4 / 9, 2 / 9), strict=True):
        assert s[f"mhga/uniform_{rel}"] == pytest.approx(value, rel=1e-6)
    assert sum(s[f"mhga/{r}"] for r in mech.RELATIONS) == pytest.approx(1.0, rel=1e-5)
    classes = section["static"]["num_classes"]
    assert 0 < s["ca/entropy"] <= math.log(classes) + 1e-5
    assert section["static"]["triplet_feature"] in mech.TRIPLET_FEATURES
    assert section["static"]["triplet_margin"] == tiny_run["cfg"].loss.margin
    assert {"SE", "CA", "triplet", "MHGA"} <= {v["mechanism"] for v in section["verdicts"]}
    # log.txt: one summary line for the epoch, the same numbers rounded.
    lines = [ln for ln in (run / "log.txt").read_text().splitlines() if " mechanisms 1/1 | " in ln]
    assert len(lines) == 1 and lines[0].endswith(mech.summary_line(s))
    # TensorBoard: one point per step (log_every=1); their mean is the epoch's mean.
    tb = read_scalars(run, source="tensorboard")
    steps, values = tb["mechanisms/triplet/loss"]
    assert steps.tolist() == [1, 2]
    assert values.mean() == pytest.approx(s["triplet/loss"], rel=1e-5)
    _, loss_values = tb["loss/tri"]
    assert loss_values.tolist() == pytest.approx(values.tolist(), rel=1e-6)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["mechanisms"]["epochs"] == section["epochs"]


@pytest.mark.slow  # about 15 s; it runs in the default suite and CI
def test_the_statistics_compile_without_a_graph_break(tiny_overrides):
    """``train.compile``: forward, loss with its statistics and their flattening, one graph."""
    cfg = load_config(None, [*tiny_overrides, "model.mhga.layer=message_passing"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 4, (32, 16)).train()
    criterion = build_criterion(cfg.loss)

    def step(vis, ir, pids):
        out = model(vis, ir)
        loss, terms, loss_stats = criterion(out, pids, return_stats=True)
        return loss, mech.step_statistics(out, terms, loss_stats)

    torch._dynamo.reset()
    vis, ir = torch.randn(4, 3, 32, 16), torch.randn(4, 3, 32, 16)
    explained = torch._dynamo.explain(step)(vis, ir, torch.tensor([0, 0, 1, 1] * 2))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: host synchronisation is a CUDA notion",
)
def test_a_training_step_with_its_statistics_never_waits_for_the_device(tiny_overrides):
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising call: a whole
    step (forward, loss with statistics, backward, Adam) and the window's sums must make none."""
    cfg = load_config(None, tiny_overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, 4, (32, 16)).to("cuda").train()
    criterion = build_criterion(cfg.loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    vis, ir = torch.randn(4, 3, 32, 16, device="cuda"), torch.randn(4, 3, 32, 16, device="cuda")
    pids = torch.tensor([0, 0, 1, 1] * 2, device="cuda")
    window = _Window()

    def step():
        out = model(vis, ir)
        loss, terms, loss_stats = criterion(out, pids, return_stats=True)
        health = mech.step_statistics(out, terms, loss_stats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.add(loss.detach(), {k: v.detach() for k, v in terms.items()}, health)

    step()  # the first step allocates and initialises the optimiser state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss, _, health = window.read()  # the one host copy, at the log point
    assert math.isfinite(loss) and "se/block0/i2v/same_position" in health
