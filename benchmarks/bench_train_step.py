#!/usr/bin/env python
"""Training-step and embedding time of full CSET against the baseline, side by side.

    python benchmarks/bench_train_step.py                     # synthetic default model
    python benchmarks/bench_train_step.py --config configs/sysu_mm01.yaml --batch 8
    python benchmarks/bench_train_step.py --config configs/sysu_mm01.yaml --device cuda
    python benchmarks/bench_train_step.py --config configs/sysu_mm01.yaml --device cuda \
        train.amp=off train.compile=true              # fp32, compiled model and loss

* training step: forward + loss + backward + Adam step on ``B`` aligned pairs, for the
  baseline (SE, CA and MHGA off) and full CSET (the recipe's switches, all on by default);
* embedding: ``model.embed`` per image for both, and for a plain timm ViT with the same
  backbone (``forward_features``, class token) as the floor.

Rounds alternate between the models so machine-speed drift hits them alike; medians shown.
The step runs as training runs it: under the recipe's ``train.amp`` autocast (``auto`` = bf16
on GPUs that compute it natively, fp32 elsewhere; fp16 goes through a GradScaler) and, with
``train.compile=true``, through ``torch.compile`` (compiled during the warm-up step). On CUDA
every timing waits for the GPU (``torch.cuda.synchronize``). ``img/s`` counts both images of
each pair: ``2 * batch / step time``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import timm
import torch

from csetgraph.config import load_config
from csetgraph.engine.distributed import autocast_context, describe_device, resolve_device
from csetgraph.errors import run_command
from csetgraph.losses import CSETLoss
from csetgraph.models import build_model
from csetgraph.models.ablation import ablation_config


def timed(fn, device: torch.device) -> float:
    # CUDA kernels run asynchronously: without the synchronisations the clock would stop
    # when the last kernel is queued, not when it has finished.
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _device: None)
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None)
    parser.add_argument("--batch", type=int, default=16, help="aligned pairs per training step")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_intermixed_args(argv)
    return run_command(lambda: run(args), debug=args.debug, name="bench_train_step")


def build_models(base, size: tuple[int, int], device: torch.device) -> dict[str, torch.nn.Module]:
    """The baseline and full CSET from one recipe, same seed, and the plain timm ViT."""
    models = {}
    for name, variant in (("baseline", "baseline"), ("CSET", "SE both + CA + MHGA")):
        torch.manual_seed(0)
        models[name] = build_model(ablation_config(base, variant).model, 100, size).to(device)
    dims = dict(
        embed_dim=base.model.embed_dim, depth=base.model.depth, num_heads=base.model.num_heads
    )
    plain = timm.create_model(
        base.model.backbone,
        img_size=size,
        num_classes=0,
        **{k: v for k, v in dims.items() if v is not None},
    )
    models["timm ViT"] = plain.to(device).eval()
    return models


def make_step(model, criterion, amp: str, device: torch.device, batch):
    """One training step as the trainer takes it: autocast forward + loss, backward, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    amp_ctx, scaler = autocast_context(amp, device)
    vis, ir, pids = batch

    def step():
        model.train()
        with amp_ctx:
            loss, _ = criterion(model(vis, ir), pids)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return step


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, option="--device")
    base = load_config(args.config, args.overrides)
    base.model.pretrained = ""
    size = (base.data.height, base.data.width)
    models = build_models(base, size, device)
    plain = models.pop("timm ViT")
    criterion = CSETLoss()
    B = args.batch
    vis, ir = torch.randn(B, 3, *size, device=device), torch.randn(B, 3, *size, device=device)
    pids = torch.arange(B // 2, device=device).repeat_interleave(2).repeat(2)
    steps = {}
    for name, model in models.items():
        train_model, loss_fn = model, criterion
        if base.train.compile:
            train_model, loss_fn = torch.compile(model), torch.compile(criterion)
        steps[name] = make_step(train_model, loss_fn, base.train.amp, device, (vis, ir, pids))
    train_t = {n: [] for n in models}
    embed_t = {n: [] for n in [*models, "timm ViT"]}
    for step in steps.values():  # warm-up (and compilation with train.compile=true)
        step()
    for _ in range(args.rounds):
        for name, step in steps.items():
            train_t[name].append(timed(step, device))
        with torch.inference_mode():
            for name, model in models.items():
                model.eval()
                embed_t[name].append(timed(lambda m=model: m.embed(ir, "ir"), device) / B)
            plain_embed = timed(lambda: plain.forward_features(ir)[:, 0], device)
            embed_t["timm ViT"].append(plain_embed / B)
    report(args, base, device, train_t, embed_t)
    return 0


def report(args, base, device: torch.device, train_t: dict, embed_t: dict) -> None:
    med = {n: statistics.median(v) for n, v in train_t.items()}
    emb = {n: statistics.median(v) for n, v in embed_t.items()}
    amp, _ = autocast_context(base.train.amp, device)
    precision = f"autocast {amp.fast_dtype}" if isinstance(amp, torch.autocast) else "fp32"
    print(
        f"backbone {base.model.backbone}, input {base.data.height}x{base.data.width}, "
        f"{args.batch} pairs/step, SE layers {list(base.model.se.layers)}, device "
        f"{describe_device(device)}, {precision}, compile {base.train.compile}, "
        f"{args.rounds} rounds (median)"
    )
    head = f"{'train step (s)':>15} {'img/s':>9} {'x baseline':>11}"
    print(f"{'':<10} {head} {'embed ms/img':>13} {'x base':>11}")
    for name in [*med, "timm ViT"]:
        t = " " * len(head)
        if name in med:
            imgs = 2 * args.batch / med[name]  # both images of every pair
            t = f"{med[name]:15.3f} {imgs:9.1f} {med[name] / med['baseline']:11.2f}"
        print(f"{name:<10} {t} {1e3 * emb[name]:13.3f} {emb[name] / emb['baseline']:11.2f}")


if __name__ == "__main__":
    sys.exit(main())
