#!/usr/bin/env python
"""Pretrain the small ViT that the synthetic recipe starts both encoders from.

In the paper both encoders start from the same ImageNet weights; no such weights can be
downloaded on a machine without internet, and a tiny ViT trained from scratch aligns its two
non-shared streams slowly. This script makes the synthetic analogue: it generates a synthetic
data set *disjoint* from the default one (another seed, so other identities, clothes and
cameras), trains one encoder shared by both modalities on it, and exports that encoder's
timm state dict as safetensors. ``configs/synthetic.yaml`` loads it through
``model.pretrained`` -- the same path that loads ImageNet weights for the paper's recipes.

    python scripts/pretrain_backbone.py --output weights/vit_synthetic_d128.safetensors

Overrides after the options go to the training config (e.g. ``train.epochs=20``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

from csetgraph.config import load_config
from csetgraph.engine import train

DEFAULTS = [
    "data.root=data/synthetic_pretrain",
    "data.synthetic.seed=1000",  # disjoint from the default data set (seed 0)
    "data.synthetic.num_train_ids=240",
    "data.synthetic.num_val_ids=8",
    "data.synthetic.num_test_ids=40",
    "model.pretrained=",
    "model.share_encoders=true",
    "train.epochs=20",
    "train.step_size=15",
    "train.run_name=pretrain_backbone",
    "eval.trials=2",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None, help="base recipe (default: built-in synthetic)")
    parser.add_argument("--output", default="weights/vit_synthetic_d128.safetensors")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, DEFAULTS + list(args.overrides))
    out = train(cfg, progress=not args.no_progress)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in out["model"].vis_encoder.vit.state_dict().items()
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_file(
        state,
        args.output,
        metadata={"backbone": cfg.model.backbone, "source": "csetgraph synthetic pretraining"},
    )
    print(f"wrote {args.output} ({sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
