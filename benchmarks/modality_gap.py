#!/usr/bin/env python
"""Is the synthetic modality gap real, and what limits a model: identity or alignment?

Two runs of the same recipe and budget, side by side:

* ``both``: the normal synthetic training (visible and infrared images of the training ids);
* ``vis-only``: the same, but every infrared training image is replaced by a visible image
  of the same identity (a copy of the tree whose training ids' infrared folders hold
  visible images), so the model never sees infrared during training.

Both are tested on the same held-out identities with real infrared queries (SYSU-MM01
all-search, infrared -> visible). If infrared images carried the same cues as visible ones,
the two would score alike; the gap shows in how much worse ``vis-only`` does.

For each run it also prints the three-number report, on the *same* embeddings of the test
identities (every image of one camera as queries, every image of another as the gallery):

* visible cam 1 -> visible cam 4: does the visible encoder know who someone is?
* infrared cam 3 -> infrared cam 6: does the infrared encoder?
* infrared cam 3 -> visible cam 1: are the two feature spaces aligned?

A model with high within-modality numbers and a low cross-modal one has learnt identity but
not alignment. ``--run`` prints the report for an already trained run instead.

    python benchmarks/modality_gap.py                      # the synthetic default recipe
    python benchmarks/modality_gap.py train.epochs=4       # any config override
    python benchmarks/modality_gap.py --run runs/<name>    # the report of a trained run
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from csetgraph.config import Config, load_config
from csetgraph.data.build import ensure_dataset
from csetgraph.data.sysu_mm01 import IR_CAMERAS, all_records, read_ids
from csetgraph.errors import ConfigError, run_command

#: (name, query modality, query camera, gallery modality, gallery camera)
REPORT = (
    ("vis cam1 -> vis cam4", "vis", 1, "vis", 4),
    ("ir cam3 -> ir cam6", "ir", 3, "ir", 6),
    ("ir cam3 -> vis cam1", "ir", 3, "vis", 1),
)


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


def modality_report(
    model: torch.nn.Module, cfg: Config, device, *, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Rank-1 and mAP of the three retrievals of :data:`REPORT` on one set of embeddings.

    Every image of the query camera is a query; every image of the gallery camera is in
    the gallery (multi-shot); cameras differ, so nothing is excluded.
    """
    from csetgraph.engine.runs import eval_transform
    from csetgraph.evaluation.features import extract_features
    from csetgraph.evaluation.metrics import pairwise_distance, rank_metrics

    records = all_records(cfg.data.root, split)
    tf = eval_transform(model, cfg)
    feats = {
        m: extract_features(model, records[m], m, transform=tf, device=device, progress=False)
        for m in ("vis", "ir")
    }
    out = {}
    for name, qm, qc, gm, gc in REPORT:
        q = [i for i, r in enumerate(records[qm]) if r.camid == qc]
        g = [i for i, r in enumerate(records[gm]) if r.camid == gc]
        if not q or not g:
            raise ConfigError(f"{cfg.data.root!r} has no {split} images in camera {qc} or {gc}")
        dist = pairwise_distance(feats[qm][q], feats[gm][g], cfg.eval.metric)
        pids = lambda m, idx: np.array([records[m][i].pid for i in idx])  # noqa: E731
        res = rank_metrics(dist, pids(qm, q), pids(gm, g), None, None, protocol="regdb")
        out[name] = {"rank1": float(res.cmc[0]), "mAP": float(res.mAP)}
    return out


def print_report(title: str, report: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}: same embeddings, test identities, multi-shot gallery")
    print(f"{'retrieval':<24} {'R-1':>7} {'mAP':>7}")
    for name, m in report.items():
        print(f"{name:<24} {100 * m['rank1']:7.2f} {100 * m['mAP']:7.2f}")


def compare_training(args: argparse.Namespace) -> None:
    """The two trainings (both modalities, visible only) and their reports."""
    from csetgraph.engine import train

    base = load_config(args.config, args.overrides)
    root = ensure_dataset(base.data)
    vis_root = visible_only_copy(root, Path(args.output_dir) / "vis_only_data")
    rows, reports = {}, {}
    for name, data_root in (("both", root), ("vis-only", vis_root)):
        extra = [f"data.root={data_root}", "data.synthetic.enabled=false"]
        extra += [
            f"train.output_dir={args.output_dir}",
            f"train.run_name={name}",
            "eval.modes=[all]",
        ]
        cfg = load_config(args.config, [*args.overrides, *extra])
        out = train(cfg, progress=False)
        rows[name] = out["results"]["all"]["mean"]
        device = next(out["model"].parameters()).device
        reports[name] = modality_report(out["model"], cfg, device)
    print("\nIR -> VIS retrieval on held-out synthetic ids (SYSU all-search), same recipe:")
    print(f"{'training images':<16} {'R-1':>7} {'R-10':>7} {'mAP':>7} {'mINP':>7}")
    for name, m in rows.items():
        cells = " ".join(f"{100 * m[k]:7.2f}" for k in ("rank1", "rank10", "mAP", "mINP"))
        print(f"{name:<16} {cells}")
    ratio = rows["both"]["rank1"] / max(rows["vis-only"]["rank1"], 1e-9)
    print(f"Rank-1 ratio both / vis-only: {ratio:.2f}x")
    for name, report in reports.items():
        print_report(f"trained on {name}", report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None)
    parser.add_argument("--output-dir", default="runs/modality_gap")
    parser.add_argument("--run", default=None, help="report on this trained run; no training")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        if args.run:
            from csetgraph.engine.runs import load_run

            model, cfg = load_run(args.run, config=args.config, overrides=args.overrides)
            print_report(f"run {args.run}", modality_report(model, cfg, "cpu"))
        else:
            compare_training(args)
        return 0

    return run_command(body, debug=args.debug, name="modality_gap")


if __name__ == "__main__":
    sys.exit(main())
