#!/usr/bin/env python
"""Sweep one config key over a list of values (the paper's Figures 3 and 4), several seeds each.

    python scripts/sweep.py model.se.alpha=0.1,0.3,0.5,0.7,0.9            # 3 seeds each
    python scripts/sweep.py "model.mhga.strengths=[1,0.7,0.3],[1,0.5,0.1]" --seeds 2
    python scripts/sweep.py model.se.alpha=0.3,0.7 --reference 0.7 train.epochs=4

The first ``key=v1,v2,...`` argument is the sweep (list values go in brackets, split at the
commas between them); other ``key=value`` arguments override the recipe for every point.
Each value is trained with the same seeds; the table gives per metric mean ± std and the
paired difference to the reference value (default: the first) with a 95% t-interval.
Writes ``table.md``, ``table.json`` and one plot per metric (mean, error bars of one std)
to ``<train.output_dir>/sweep_<key>/``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from csetgraph.config import load_config
from csetgraph.errors import ConfigError, run_command
from csetgraph.experiments import parse_sweep, plot_sweep, run_table


def split_values(text: str) -> tuple[str, list[str]]:
    """Like :func:`parse_sweep`, but commas inside brackets stay in their value."""
    key, sep, rest = text.partition("=")
    if "[" not in rest:
        return parse_sweep(text)
    items = [v.strip() for v in re.findall(r"\[[^\]]*\]|[^,\[\]]+", rest) if v.strip()]
    if not sep or not items:
        raise ConfigError(f"cannot read the sweep {text!r}: write key=v1,v2,...")
    return key.strip(), items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=None, help="recipe (default: built-in synthetic)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per value (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--reference", default=None, help="value the differences are taken to")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--output-dir", default=None)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="read run folders that hold a finished run of the same config (test ids)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("sweep_and_overrides", nargs="+", metavar="key=value", help="sweep first")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
        key, values = split_values(args.sweep_and_overrides[0])
        overrides = args.sweep_and_overrides[1:]
        reference = args.reference or values[0]
        if reference not in values:
            raise ConfigError(f"--reference {reference!r} is not one of the values {values}")
        base = load_config(args.config, overrides)
        configs = {
            f"{key}={v}": load_config(args.config, [*overrides, f"{key}={v}"]) for v in values
        }
        out_dir = Path(args.output_dir or Path(base.train.output_dir) / f"sweep_{key}")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        ref_row = f"{key}={reference}"
        title = (
            f"Sweep of {key} on {base.data.dataset} ({base.data.root}), {args.split} identities, "
            f"seeds {seeds}"
        )
        extra = {"key": key, "values": values, "seeds": seeds, "split": args.split}
        md, summary = run_table(
            configs,
            seeds,
            out_dir,
            ref_row,
            title=title,
            extra=extra,
            split=args.split,
            progress=not args.no_progress,
            reuse=args.reuse,
        )
        plots = plot_sweep(summary, key, values, out_dir)
        print(md.read_text())
        print(f"written to {md}, {out_dir / 'table.json'} and {len(plots)} plots")
        return 0

    return run_command(body, debug=args.debug, name="sweep")


if __name__ == "__main__":
    sys.exit(main())
