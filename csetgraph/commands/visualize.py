"""Figures of trained CSET runs: ranked lists, token heat maps, modality t-SNE, training curves.

    csetgraph visualize ranked  --checkpoint runs/baseline runs/cset --names baseline CSET
    csetgraph visualize ranked  --checkpoint runs/llcm --direction v2i --per-query
    csetgraph visualize heatmap --checkpoint runs/baseline runs/cset --source attention
    csetgraph visualize heatmap --checkpoint runs/cset --source mhga --num-ids 3
    csetgraph visualize tsne    --checkpoint runs/cset data.root=/data/SYSU-MM01 --max-ids 12
    csetgraph visualize curves  --run runs/cset

``--checkpoint`` takes one or two run folders (their ``checkpoints/last.pt``) or checkpoint
files; with two, the figure shows them side by side (e.g. the baseline and CSET). The data
set is the run's own (``config.yaml``); dotted ``section.key=value`` arguments override its
config wherever they stand on the line (even right after ``--checkpoint``), e.g.
``data.root=/data/SYSU-MM01`` when the data set has moved. Each command writes a PNG
(``--output``) and prints its path. Directions are ``i2v`` (infrared queries) and ``v2i``.

A user mistake (a config value, a data-set folder, a checkpoint, a missing run) prints one
line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csetgraph.commands.arguments import (
    int_at_least,
    positive_float,
    take_overrides_from_checkpoints,
)
from csetgraph.errors import ConfigError, run_command
from csetgraph.files import atomic_path

#: subcommand -> (one-line help, default output)
FIGURES = {
    "ranked": ("query beside its top-k gallery images", "figures/ranked.png"),
    "heatmap": ("token response over visible and infrared images", "figures/heatmap.png"),
    "tsne": ("t-SNE of both modalities' embeddings", "figures/tsne.png"),
    "curves": ("training curves of a run folder", "figures/curves.png"),
}


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", nargs="+", required=True, help="one or two run folders/checkpoint files"
    )
    p.add_argument("--names", nargs="+", help="row labels (default: run folder names)")
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--seed", type=int, default=0, help="draws of queries/identities/t-SNE")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value")


def figure_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one figure subcommand."""
    summary, output = FIGURES[name]
    p = argparse.ArgumentParser(prog=f"csetgraph visualize {name}", description=summary)
    p.add_argument(
        "--output", default=output, help=f"image path, .png/.pdf/.svg/... (default {output})"
    )
    p.add_argument("--dpi", type=int_at_least(10), default=100)
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    if name == "curves":
        p.add_argument("--run", required=True, help="the run folder")
        p.add_argument("--source", default="auto", choices=("auto", "tensorboard", "log"))
        return p
    _model_arguments(p)
    if name == "ranked":
        p.add_argument("--k", type=int_at_least(1), default=5, help="ranked images per query")
        p.add_argument("--queries", type=int_at_least(0), nargs="+", help="query indices")
        p.add_argument("--num-queries", type=int_at_least(1), default=4)
        p.add_argument("--mode", default="all", choices=("all", "indoor"), help="SYSU-MM01")
        p.add_argument("--trial", type=int_at_least(0), default=0, help="evaluation trial")
        p.add_argument("--direction", default="i2v", choices=("i2v", "v2i"))
        p.add_argument("--per-query", action="store_true", help="one PNG per query")
    elif name == "heatmap":
        p.add_argument("--source", default="attention", choices=("attention", "rollout", "mhga"))
        p.add_argument("--num-blocks", type=int_at_least(1), default=1, help="last blocks")
        p.add_argument("--num-ids", type=int_at_least(1), default=2)
        p.add_argument("--pids", type=int, nargs="+", help="identities (default: random)")
    else:  # tsne
        p.add_argument("--max-ids", type=int_at_least(2), default=12)
        p.add_argument("--perplexity", type=positive_float, default=30.0)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (for ``--help``); each figure parses with :func:`figure_parser`."""
    p = argparse.ArgumentParser(
        prog="csetgraph visualize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(FIGURES) + "}")
    for name, (summary, _) in FIGURES.items():
        sub.add_parser(name, help=summary, add_help=False)
    return p


def image_formats() -> dict[str, str]:
    """The file suffixes matplotlib can write (without the dot) and their names."""
    from matplotlib.figure import Figure

    return Figure().canvas.get_supported_filetypes()


def check_output(output: str) -> None:
    """Refuse an ``--output`` whose suffix names no image format matplotlib writes."""
    suffix = Path(output).suffix.lower().lstrip(".")
    formats = image_formats()
    if suffix in formats:
        return
    what = f"has the suffix .{suffix}, not an image format" if suffix else "has no image suffix"
    raise ConfigError(
        f"--output {output!r} {what}; end it with .png (or one of "
        f"{', '.join('.' + f for f in sorted(formats))})"
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Move overrides out of ``--checkpoint`` and refuse what cannot be right."""
    take_overrides_from_checkpoints(args)
    if not 1 <= len(args.checkpoint) <= 2:
        raise ConfigError(
            f"--checkpoint takes one or two runs (e.g. the baseline and CSET), got "
            f"{len(args.checkpoint)}"
        )
    if args.names and len(args.names) != len(args.checkpoint):
        raise ConfigError(f"--names needs one name per checkpoint ({len(args.checkpoint)})")


def load_models(args: argparse.Namespace) -> list[tuple[str, object, object]]:
    """``(name, model, config)`` of each ``--checkpoint``."""
    from csetgraph.visualization import load_run, run_folder

    names = args.names or [run_folder(p).name for p in args.checkpoint]
    return [
        (name, *load_run(path, overrides=args.overrides, device=args.device))
        for name, path in zip(names, args.checkpoint, strict=True)
    ]


def save(fig, path: str | Path, dpi: int) -> None:
    """Render ``fig`` to ``path`` atomically (a temporary file, then a rename); print it."""
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower())
    print(path)


def draw_ranked(args: argparse.Namespace) -> None:
    from csetgraph.visualization import compute_ranked_lists, plot_ranked_lists, retrieval_set
    from csetgraph.visualization.ranked import choose_queries

    runs = load_models(args)
    where = dict(mode=args.mode, trial=args.trial, split=args.split, direction=args.direction)
    rs = retrieval_set(runs[0][2], **where)
    queries = args.queries or choose_queries(len(rs.query), args.num_queries, args.seed)
    lists = {
        name: compute_ranked_lists(
            model, cfg, queries=queries, k=args.k, device=args.device, **where
        )
        for name, model, cfg in runs
    }
    title = f"top-{args.k} ranked lists, {rs.description} ({args.split} ids)"
    if not args.per_query:
        save(plot_ranked_lists(lists, dpi=args.dpi, title=title)[0], args.output, args.dpi)
        return
    stem = Path(args.output)
    for i, q in enumerate(queries):
        fig, _ = plot_ranked_lists({n: [v[i]] for n, v in lists.items()}, dpi=args.dpi, title=title)
        save(fig, stem.with_name(f"{stem.stem}_q{q}{stem.suffix}"), args.dpi)


def draw_heatmap(args: argparse.Namespace) -> None:
    from csetgraph.visualization import (
        compute_heatmaps,
        identity_pairs,
        plot_heatmaps,
        split_images,
    )

    runs = load_models(args)
    cfg0 = runs[0][2]
    images = split_images(cfg0, args.split)
    pairs = identity_pairs(images, num_ids=args.num_ids, pids=args.pids, seed=args.seed)
    records = [r for pair in pairs for r in pair]
    maps = {
        name: compute_heatmaps(
            model, cfg, records, source=args.source, num_blocks=args.num_blocks, device=args.device
        )
        for name, model, cfg in runs
    }
    title = f"token response heat maps ({args.source}), {cfg0.data.dataset} {args.split} ids"
    save(plot_heatmaps(maps, dpi=args.dpi, title=title), args.output, args.dpi)


def draw_tsne(args: argparse.Namespace) -> None:
    from csetgraph.visualization import embed_test_images, modality_distances, plot_tsne, tsne_2d

    runs = load_models(args)
    stem = Path(args.output)
    for name, model, cfg in runs:
        output = stem if len(runs) == 1 else stem.with_name(f"{stem.stem}_{name}{stem.suffix}")
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
        title = f"t-SNE of {cfg.data.dataset} {args.split} embeddings: {name}"
        fig = plot_tsne(coords, emb.pids, emb.modalities, distances=dist, dpi=args.dpi, title=title)
        save(fig, output, args.dpi)


def draw_curves(args: argparse.Namespace) -> None:
    from csetgraph.visualization import plot_curves, read_scalars

    run = Path(args.run)
    fig = plot_curves(
        read_scalars(run, source=args.source),
        title=f"training curves: {run.resolve().name}",
        dpi=args.dpi,
    )
    save(fig, args.output, args.dpi)


DRAW = {"ranked": draw_ranked, "heatmap": draw_heatmap, "tsne": draw_tsne, "curves": draw_curves}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in FIGURES:
        parser = build_parser()
        if argv and argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        got = f" (got {argv[0]!r})" if argv else ""
        parser.print_usage(sys.stderr)
        print(f"csetgraph visualize: error: name a figure first{got}", file=sys.stderr)
        return 2
    name = argv[0]
    args = figure_parser(name).parse_intermixed_args(argv[1:])

    def body() -> int:
        check_output(args.output)
        if name != "curves":
            check_arguments(args)
        DRAW[name](args)
        return 0

    return run_command(body, debug=args.debug, name=f"csetgraph visualize {name}")


if __name__ == "__main__":
    raise SystemExit(main())
