#!/usr/bin/env python
"""Figures of trained CSET runs: ranked lists, token heat maps, modality t-SNE, training curves.

    python scripts/visualize.py ranked  --checkpoint runs/baseline runs/cset --names baseline CSET
    python scripts/visualize.py heatmap --checkpoint runs/baseline runs/cset --source attention
    python scripts/visualize.py heatmap --checkpoint runs/cset --source mhga --num-ids 3
    python scripts/visualize.py tsne    --checkpoint runs/cset --max-ids 12
    python scripts/visualize.py curves  --run runs/cset

``--checkpoint`` takes run folders (their ``checkpoints/last.pt``) or checkpoint files; with
two, the figure shows them side by side (e.g. the baseline and CSET). The data set is the
run's own (``config.yaml``); positional ``key=value`` arguments override its config, e.g.
``data.root=/data/SYSU-MM01``. Each command writes a PNG (``--output``) and prints its path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from csetgraph.config import ConfigError
from csetgraph.data.records import DatasetLayoutError
from csetgraph.models import CheckpointError
from csetgraph.visualization import (
    compute_heatmaps,
    compute_ranked_lists,
    embed_test_images,
    identity_pairs,
    load_run,
    modality_distances,
    plot_curves,
    plot_heatmaps,
    plot_ranked_lists,
    plot_tsne,
    read_scalars,
    run_folder,
    split_images,
    tsne_2d,
)
from csetgraph.visualization.ranked import choose_queries
from csetgraph.visualization.testsets import retrieval_set


def _load(args) -> list[tuple[str, torch.nn.Module, object]]:
    paths = args.checkpoint
    if len(paths) > 2:
        raise ValueError("give one or two checkpoints (e.g. the baseline and CSET)")
    names = args.names or [run_folder(p).name for p in paths]
    if len(names) != len(paths):
        raise ValueError(f"--names needs one name per checkpoint ({len(paths)})")
    out = []
    for name, path in zip(names, paths, strict=True):
        model, cfg = load_run(path, overrides=args.overrides, device=args.device)
        out.append((name, model, cfg))
    return out


def _save(fig, path: str, dpi: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    print(path)


def cmd_ranked(args) -> None:
    runs = _load(args)
    cfg0 = runs[0][2]
    rs = retrieval_set(
        cfg0, split=args.split, mode=args.mode, trial=args.trial, direction=args.direction
    )
    queries = args.queries or choose_queries(len(rs.query), args.num_queries, args.seed)
    lists = {
        name: compute_ranked_lists(
            model,
            cfg,
            queries=queries,
            k=args.k,
            mode=args.mode,
            trial=args.trial,
            split=args.split,
            direction=args.direction,
            device=args.device,
        )
        for name, model, cfg in runs
    }
    title = f"top-{args.k} ranked lists, {rs.description} ({args.split} ids)"
    if args.per_query:
        stem = Path(args.output)
        for i, q in enumerate(queries):
            fig, _ = plot_ranked_lists(
                {n: [v[i]] for n, v in lists.items()}, dpi=args.dpi, title=title
            )
            _save(fig, str(stem.with_name(f"{stem.stem}_q{q}{stem.suffix}")), args.dpi)
    else:
        fig, _ = plot_ranked_lists(lists, dpi=args.dpi, title=title)
        _save(fig, args.output, args.dpi)


def cmd_heatmap(args) -> None:
    runs = _load(args)
    cfg0 = runs[0][2]
    pairs = identity_pairs(
        split_images(cfg0, args.split), num_ids=args.num_ids, pids=args.pids, seed=args.seed
    )
    records = [r for pair in pairs for r in pair]
    maps = {
        name: compute_heatmaps(
            model, cfg, records, source=args.source, num_blocks=args.num_blocks, device=args.device
        )
        for name, model, cfg in runs
    }
    title = f"token response heat maps ({args.source}), {cfg0.data.dataset} {args.split} ids"
    _save(plot_heatmaps(maps, dpi=args.dpi, title=title), args.output, args.dpi)


def cmd_tsne(args) -> None:
    runs = _load(args)
    if len(runs) == 2:
        stem = Path(args.output)
        outputs = [str(stem.with_name(f"{stem.stem}_{n}{stem.suffix}")) for n, _, _ in runs]
    else:
        outputs = [args.output]
    for (name, model, cfg), output in zip(runs, outputs, strict=True):
        emb = embed_test_images(
            model, cfg, split=args.split, max_ids=args.max_ids, seed=args.seed, device=args.device
        )
        dist = modality_distances(emb.features, emb.pids, emb.modalities)
        print(
            f"{name}: mean distance, same identity visible-infrared {dist['intra_cross']:.4f}, "
            f"different identities {dist['inter']:.4f} "
            f"(visible-infrared {dist['inter_cross']:.4f}); {len(emb.pids)} images, "
            f"{len(set(emb.pids.tolist()))} identities"
        )
        coords = tsne_2d(emb.features, seed=args.seed, perplexity=args.perplexity)
        fig = plot_tsne(
            coords,
            emb.pids,
            emb.modalities,
            distances=dist,
            dpi=args.dpi,
            title=f"t-SNE of {cfg.data.dataset} {args.split} embeddings: {name}",
        )
        _save(fig, output, args.dpi)


def cmd_curves(args) -> None:
    scalars = read_scalars(args.run, source=args.source)
    fig = plot_curves(
        scalars, title=f"training curves: {Path(args.run).resolve().name}", dpi=args.dpi
    )
    _save(fig, args.output, args.dpi)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p, output):
        p.add_argument(
            "--checkpoint",
            nargs="+",
            required=True,
            help="one or two run folders or checkpoint files",
        )
        p.add_argument("--names", nargs="+", help="row labels (default: run folder names)")
        p.add_argument("--output", default=output, help=f"PNG path (default {output})")
        p.add_argument("--split", default="test", choices=("test", "val"))
        p.add_argument("--seed", type=int, default=0, help="draws of queries/identities/t-SNE")
        p.add_argument("--device", default="cpu")
        p.add_argument("--dpi", type=int, default=100)
        p.add_argument("overrides", nargs="*", help="config overrides key=value")

    p = sub.add_parser("ranked", help="query beside its top-k gallery images")
    model_args(p, "figures/ranked.png")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--queries", type=int, nargs="+", help="query indices (default: random)")
    p.add_argument("--num-queries", type=int, default=4)
    p.add_argument("--mode", default="all", choices=("all", "indoor"), help="SYSU-MM01 mode")
    p.add_argument("--trial", type=int, default=0, help="gallery draw (SYSU-MM01, LLCM)")
    p.add_argument("--direction", default="I2V", choices=("I2V", "V2I"))
    p.add_argument("--per-query", action="store_true", help="one PNG per query")
    p.set_defaults(func=cmd_ranked)

    p = sub.add_parser("heatmap", help="token response over visible and infrared images")
    model_args(p, "figures/heatmap.png")
    p.add_argument("--source", default="attention", choices=("attention", "rollout", "mhga"))
    p.add_argument("--num-blocks", type=int, default=1, help="last blocks averaged (attention)")
    p.add_argument("--num-ids", type=int, default=2)
    p.add_argument("--pids", type=int, nargs="+", help="identities to show (default: random)")
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("tsne", help="t-SNE of both modalities' embeddings")
    model_args(p, "figures/tsne.png")
    p.add_argument("--max-ids", type=int, default=12)
    p.add_argument("--perplexity", type=float, default=30.0)
    p.set_defaults(func=cmd_tsne)

    p = sub.add_parser("curves", help="training curves of a run folder")
    p.add_argument("--run", required=True, help="the run folder")
    p.add_argument("--output", default="figures/curves.png")
    p.add_argument("--source", default="auto", choices=("auto", "tensorboard", "log"))
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=cmd_curves)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, CheckpointError, DatasetLayoutError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
