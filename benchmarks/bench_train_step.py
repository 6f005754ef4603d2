#!/usr/bin/env python
"""Training-step and embedding time of full CSET against the baseline, side by side.

    python benchmarks/bench_train_step.py                     # synthetic default model
    python benchmarks/bench_train_step.py --config configs/sysu_mm01.yaml --batch 8

* training step: forward + loss + backward + Adam step on ``B`` aligned pairs, for the
  baseline (SE, CA and MHGA off) and full CSET (the recipe's switches, all on by default);
* embedding: ``model.embed`` per image for both, and for a plain timm ViT with the same
  backbone (``forward_features``, class token) as the floor.

Rounds alternate between the models so machine-speed drift hits them alike; medians shown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import timm
import torch

from csetgraph.config import load_config
from csetgraph.losses import CSETLoss
from csetgraph.models import build_model
from csetgraph.models.ablation import ablation_config


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None)
    parser.add_argument("--batch", type=int, default=16, help="aligned pairs per training step")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(args.config, args.overrides)
    base.model.pretrained = ""
    size = (base.data.height, base.data.width)
    classes = 100
    cfgs = {
        "baseline": ablation_config(base, "baseline"),
        "CSET": ablation_config(base, "SE both + CA + MHGA"),
    }
    models, opts = {}, {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        models[name] = build_model(cfg.model, classes, size)
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=3e-4)
    plain = timm.create_model(
        base.model.backbone,
        img_size=size,
        num_classes=0,
        **{
            k: v
            for k, v in dict(
                embed_dim=base.model.embed_dim,
                depth=base.model.depth,
                num_heads=base.model.num_heads,
            ).items()
            if v is not None
        },
    ).eval()
    criterion = CSETLoss()
    B = args.batch
    vis, ir = torch.randn(B, 3, *size), torch.randn(B, 3, *size)
    pids = torch.arange(B // 2).repeat_interleave(2).repeat(2)

    def step(name):
        model, opt = models[name], opts[name]
        model.train()
        loss, _ = criterion(model(vis, ir), pids)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_t = {n: [] for n in models}
    embed_t = {n: [] for n in [*models, "timm ViT"]}
    for name in models:  # warm-up
        step(name)
    for _ in range(args.rounds):
        for name in models:
            train_t[name].append(timed(lambda n=name: step(n)))
        with torch.inference_mode():
            for name, model in models.items():
                model.eval()
                embed_t[name].append(timed(lambda m=model: m.embed(ir, "ir")) / B)
            embed_t["timm ViT"].append(timed(lambda: plain.forward_features(ir)[:, 0]) / B)
    med = {n: statistics.median(v) for n, v in train_t.items()}
    emb = {n: statistics.median(v) for n, v in embed_t.items()}
    print(
        f"backbone {base.model.backbone}, input {size[0]}x{size[1]}, {B} pairs/step, "
        f"SE layers {list(base.model.se.layers)}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds (median)"
    )
    print(f"{'':<10} {'train step (s)':>15} {'x baseline':>11} {'embed ms/img':>13} {'x base':>11}")
    for name in [*models, "timm ViT"]:
        t = f"{med[name]:15.3f} {med[name] / med['baseline']:11.2f}" if name in med else " " * 27
        print(f"{name:<10} {t} {1e3 * emb[name]:13.3f} {emb[name] / emb['baseline']:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
