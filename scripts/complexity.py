#!/usr/bin/env python
"""Table 2: parameters of each Table 1 configuration and its inference time per image
relative to the baseline, measured side by side in one run on whatever device is present.

    python scripts/complexity.py                               # synthetic default model
    python scripts/complexity.py --config configs/sysu_mm01.yaml --batch 32 --device cuda

Inference is what a deployed model runs: one image of one modality through the clean stream
(and the MHGA on its own token graph), no SE, no CA. Each round times every configuration
once, in turn, so drift in machine speed hits them all alike; the median over rounds is
reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from csetgraph.config import load_config
from csetgraph.models import build_model
from csetgraph.models.ablation import TABLE1, ablation_config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None)
    parser.add_argument("--num-classes", type=int, default=395, help="classifier width (SYSU: 395)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads on the CPU (0: default)"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    base = load_config(args.config, args.overrides)
    base.model.pretrained = ""  # weights do not change the cost
    size = (base.data.height, base.data.width)
    models = {}
    for name, *_ in TABLE1:
        torch.manual_seed(0)
        models[name] = (
            build_model(ablation_config(base, name).model, args.num_classes, size).to(device).eval()
        )
    x = torch.randn(args.batch, 3, *size, device=device)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model.embed(x, "ir")
        for _ in range(args.rounds):
            for name, model in models.items():
                sync(device)
                t0 = time.perf_counter()
                model.embed(x, "ir")
                sync(device)
                times[name].append((time.perf_counter() - t0) / args.batch)
    base_ms = statistics.median(times["baseline"]) * 1e3
    print(
        f"device {device}, batch {args.batch}, input {size[0]}x{size[1]}, "
        f"backbone {base.model.backbone}, {args.rounds} rounds (median)"
    )
    print(f"{'configuration':<22} {'params (M)':>10} {'ms / image':>11} {'x baseline':>11}")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ms = statistics.median(times[name]) * 1e3
        print(f"{name:<22} {params:10.3f} {ms:11.3f} {ms / base_ms:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
