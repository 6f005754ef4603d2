#!/usr/bin/env python
"""Evaluate a trained CSET checkpoint with the SYSU-MM01, RegDB or LLCM protocol.

    python scripts/evaluate.py --checkpoint runs/my_run                    # its own config
    python scripts/evaluate.py --checkpoint runs/sysu --root /data/SYSU-MM01 --mode all indoor
    python scripts/evaluate.py --checkpoint runs/sysu --gallery official --shots 10
    python scripts/evaluate.py --checkpoint runs/regdb_t1 runs/regdb_t2 ... runs/regdb_t10 \\
        --output regdb.json                                   # one model per trial, averaged
    python scripts/evaluate.py --checkpoint runs/llcm --root /data/LLCM --trials 10

``--checkpoint`` takes a run folder (its ``checkpoints/last.pt``) or a checkpoint file. The
config is the run folder's ``config.yaml`` unless ``--config`` is given; positional
``key=value`` arguments override it (dotted keys, YAML values), then the options below.
The table (Rank-1/5/10/20, mAP, mINP in percent, mean ± std over trials) is printed and
the results are written as JSON (default: ``<run>/eval_<dataset>[_<split>].json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csetgraph.config import Config, ConfigError
from csetgraph.data.records import DatasetLayoutError
from csetgraph.engine.checkpoint import load_checkpoint
from csetgraph.engine.distributed import resolve_device
from csetgraph.engine.runs import (
    eval_transform,
    model_from_checkpoint,
    resolve_run_config,
    run_folder,
)
from csetgraph.evaluation.protocols import evaluate_dataset, format_table, summarise
from csetgraph.models import CheckpointError

DATASETS = ("sysu_mm01", "regdb", "llcm")


def option_overrides(args: argparse.Namespace, cfg_dataset: str) -> list[str]:
    """The dotted overrides the command-line options stand for."""
    out = []
    if args.dataset is not None:
        if args.dataset != cfg_dataset and args.root is None:
            raise ConfigError(
                f"--dataset {args.dataset} differs from the config's {cfg_dataset}: pass "
                "--root with the folder of that data set"
            )
        out.append(f"data.dataset={args.dataset}")
    if args.root is not None:
        out.append(f"data.root={args.root}")
    if args.mode is not None:
        out.append(f"eval.modes=[{', '.join(args.mode)}]")
    if args.trials is not None:
        out.append(f"eval.trials={args.trials}")
    if args.trial is not None:
        out.append(f"data.trial={args.trial}")
    if args.flip:
        out.append("eval.flip=true")
    if args.metric is not None:
        out.append(f"eval.metric={args.metric}")
    if args.batch_size is not None:
        out.append(f"eval.batch_size={args.batch_size}")
    if args.num_workers is not None:
        out.append(f"data.num_workers={args.num_workers}")
    return out


def evaluate_checkpoint(checkpoint: str, args: argparse.Namespace) -> tuple[Config, dict]:
    """Load one checkpoint with its config and run its data set's protocol."""
    ckpt = load_checkpoint(checkpoint)
    cfg = resolve_run_config(checkpoint, ckpt, args.config, args.overrides)
    cfg = resolve_run_config(
        checkpoint, ckpt, args.config, args.overrides + option_overrides(args, cfg.data.dataset)
    )
    device = resolve_device(args.device or cfg.train.device)
    model = model_from_checkpoint(ckpt, cfg, checkpoint, device)
    transform = eval_transform(model, cfg)
    results = evaluate_dataset(
        model,
        cfg,
        device=device,
        transform=transform,
        split=args.split,
        progress=not args.no_progress,
        shots=args.shots,
        gallery=args.gallery,
        rerank=args.rerank,
    )
    return cfg, results


def combine_runs(per_run: list[dict]) -> dict:
    """Average RegDB runs (one model per trial): pool each direction's trials."""
    combined = {}
    for name in per_run[0]:
        trials = [t for res in per_run for t in res[name]["trials"]]
        combined[name] = {
            **summarise(trials),
            "protocol": per_run[0][name]["protocol"],
            "query": per_run[0][name]["query"],
            "gallery": per_run[0][name]["gallery"],
            "trial": [res[name].get("trial") for res in per_run],
        }
    return combined


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="run folder(s) or checkpoint file(s); several only for RegDB (one per trial)",
    )
    parser.add_argument(
        "--config", default=None, help="YAML recipe (default: the run folder's config.yaml)"
    )
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="data set protocol")
    parser.add_argument("--root", default=None, help="data set folder (data.root)")
    parser.add_argument(
        "--mode", nargs="+", choices=("all", "indoor"), default=None, help="SYSU-MM01 modes"
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="SYSU-MM01/LLCM gallery trials (eval.trials)"
    )
    parser.add_argument("--trial", type=int, default=None, help="RegDB split 1-10 (data.trial)")
    parser.add_argument(
        "--shots", type=int, default=1, help="SYSU-MM01 gallery images per id and camera (1, 10)"
    )
    parser.add_argument(
        "--gallery",
        choices=("random", "official"),
        default="random",
        help="SYSU-MM01 gallery draw: seeded random.choice, or exp/rand_perm_cam.mat",
    )
    parser.add_argument(
        "--split", choices=("test", "val"), default="test", help="test ids, or held-out val ids"
    )
    parser.add_argument("--flip", action="store_true", help="average with mirrored images")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--metric", choices=("cosine", "euclidean"), default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.batch_size=64")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # --checkpoint takes several paths, so it also swallows overrides written after it:
    # give back the ones that look like key=value and are not files.
    swallowed = [c for c in args.checkpoint if "=" in c and not Path(c).exists()]
    args.checkpoint = [c for c in args.checkpoint if c not in swallowed]
    args.overrides = swallowed + args.overrides
    if not args.checkpoint:
        parser.error("--checkpoint needs a run folder or checkpoint file")
    if len(args.checkpoint) > 1 and args.trial is not None:
        parser.error("--trial applies to one checkpoint; each RegDB run uses its own data.trial")
    if len(args.checkpoint) > 1 and args.output is None:
        parser.error("with several checkpoints, pass --output for the combined JSON")
    try:
        runs = [evaluate_checkpoint(c, args) for c in args.checkpoint]
    except (ConfigError, CheckpointError, DatasetLayoutError) as err:
        parser.error(str(err))
    cfg = runs[0][0]
    datasets = {c.data.dataset for c, _ in runs}
    if len(runs) > 1 and datasets != {"regdb"}:
        parser.error(
            "several checkpoints are only for RegDB (one model per trial); got "
            f"{', '.join(sorted(datasets))}"
        )
    for checkpoint, (run_cfg, res) in zip(args.checkpoint, runs, strict=True):
        extra = f", trial {run_cfg.data.trial}" if run_cfg.data.dataset == "regdb" else ""
        print(format_table(res, title=f"{checkpoint}: {run_cfg.data.dataset} {args.split}{extra}"))
    results = runs[0][1] if len(runs) == 1 else combine_runs([r for _, r in runs])
    if len(runs) > 1:
        print(format_table(results, title=f"RegDB, mean over {len(runs)} runs"))
    suffix = "" if args.split == "test" else f"_{args.split}"
    output = (
        Path(args.output)
        if args.output
        else run_folder(args.checkpoint[0]) / f"eval_{cfg.data.dataset}{suffix}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoints": args.checkpoint,
        "dataset": cfg.data.dataset,
        "root": cfg.data.root,
        "split": args.split,
        "settings": {
            "modes": cfg.eval.modes,
            "trials": cfg.eval.trials,
            "regdb_trials": [c.data.trial for c, _ in runs],
            "shots": args.shots,
            "gallery": args.gallery,
            "flip": cfg.eval.flip,
            "rerank": args.rerank,
            "metric": cfg.eval.metric,
        },
        "results": results,
    }
    if len(runs) > 1:
        report["per_run"] = [r for _, r in runs]
    output.write_text(json.dumps(report, indent=2))
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
