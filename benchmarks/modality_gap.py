#!/usr/bin/env python
"""Is the synthetic modality gap real? Visible-only training against training on both.

Two runs of the same recipe and budget, side by side:

* ``both``: the normal synthetic training (visible and infrared images of the training ids);
* ``vis-only``: the same, but every infrared training image is replaced by a visible image
  of the same identity (a copy of the tree whose training ids' infrared folders hold
  visible images), so the model never sees infrared during training.

Both are tested on the same held-out identities with real infrared queries (SYSU-MM01
all-search, infrared -> visible). If infrared images carried the same cues as visible ones,
the two would score alike; the gap shows in how much worse ``vis-only`` does.

    python benchmarks/modality_gap.py                      # the synthetic default recipe
    python benchmarks/modality_gap.py train.epochs=4       # any config override
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from csetgraph.config import load_config
from csetgraph.data.build import ensure_dataset
from csetgraph.data.sysu_mm01 import IR_CAMERAS, read_ids
from csetgraph.engine import train


def visible_only_copy(root: Path, dest: Path) -> Path:
    """A copy of a SYSU-layout tree whose train/val infrared folders hold visible images."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(root, dest)
    train_ids = read_ids(dest, "train") + read_ids(dest, "val")
    for camid, source_cam in zip(IR_CAMERAS, (1, 4), strict=True):
        for pid in train_ids:
            folder = dest / f"cam{camid}" / f"{pid:04d}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(dest / f"cam{source_cam}" / f"{pid:04d}", folder)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None)
    parser.add_argument("--output-dir", default="runs/modality_gap")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    base = load_config(args.config, args.overrides)
    root = ensure_dataset(base.data)
    vis_root = visible_only_copy(root, Path(args.output_dir) / "vis_only_data")
    rows = {}
    for name, data_root in (("both", root), ("vis-only", vis_root)):
        cfg = load_config(
            args.config,
            [
                *args.overrides,
                f"data.root={data_root}",
                "data.synthetic.enabled=false",
                f"train.output_dir={args.output_dir}",
                f"train.run_name={name}",
                "eval.modes=[all]",
            ],
        )
        rows[name] = train(cfg, progress=False)["results"]["all"]["mean"]
    print("\nIR -> VIS retrieval on held-out synthetic ids (SYSU all-search), same recipe:")
    print(f"{'training images':<16} {'R-1':>7} {'R-10':>7} {'mAP':>7} {'mINP':>7}")
    for name, m in rows.items():
        print(
            f"{name:<16} {100 * m['rank1']:7.2f} {100 * m['rank10']:7.2f} "
            f"{100 * m['mAP']:7.2f} {100 * m['mINP']:7.2f}"
        )
    ratio = rows["both"]["rank1"] / max(rows["vis-only"]["rank1"], 1e-9)
    print(f"Rank-1 ratio both / vis-only: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
