#!/usr/bin/env python
"""Table 1 over several seeds: the six configurations (baseline, SE i2v / v2i / both, + CA,
+ MHGA), each trained with the same N seeds; per metric mean ± std and each row's paired
difference to the baseline with a 95% t-interval. Writes Markdown and JSON.

    python scripts/ablate.py                                   # synthetic default, 3 seeds
    python scripts/ablate.py --seeds 5 train.epochs=4
    python scripts/ablate.py --rows "baseline,SE both" --split val
    python scripts/ablate.py --seeds 20 --rows "MHGA alone" "SE both + MHGA" "SE both + CA + MHGA"
    python scripts/ablate.py --config configs/regdb.yaml data.root=/data/RegDB data.trial=1
    python scripts/ablate.py --draws 3 --seeds 3             # three draws of the synthetic set

Every row uses the same recipe, data and seeds; only the switches differ. Besides the paper's
six rows, ``--rows`` takes two it does not have: "MHGA alone" and "SE both + MHGA" (full CSET
without CA), which split full CSET's effect into its components' parts. ``--split val``
trains on the training ids only and scores the validation ids (for tuning; the published
numbers use the test ids). Results land in ``<train.output_dir>/ablation/`` (one run folder
per row and seed, ``table.md``, ``table.json``), with a health table: each row's verdicts
from ``csetgraph inspect`` and its mechanism statistics. ``--reuse`` reads the run folders
that already hold a finished run of the same config (an interrupted table goes on where it
stopped). Positional ``key=value`` overrides may stand anywhere on the line.

On the synthetic set, ``--draws N`` runs the whole table on N draws of persons and cameras
(``data.synthetic.seed`` = the config's seed .. +N-1; each other draw is generated into its
own ``<data.root>-draw<k>``): each draw's table lands in ``draw<k>/``, and ``table.md`` holds
the table across draws, the draw as the unit (one draw's 48 test persons and six cameras
decide the sign of some effects; docs/results-mechanisms.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csetgraph.config import load_config
from csetgraph.errors import ConfigError, run_command
from csetgraph.experiments import (
    draw_config,
    run_health,
    run_table,
    summarise_draws,
    write_tables,
)
from csetgraph.models.ablation import COMPONENT_ROWS, TABLE1, ablation_config

REFERENCE = TABLE1[0][0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=None, help="recipe (default: built-in synthetic)")
    p.add_argument(
        "--rows",
        nargs="+",
        default=[r[0] for r in TABLE1],
        help="Table 1 rows, separate or comma-separated (the baseline is always run); also "
        + " and ".join(f'"{row[0]}"' for row in COMPONENT_ROWS)
        + " (default: the paper's six)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. +N-1")
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="synthetic data draws (data.synthetic.seed = seed .. +N-1; default 1)",
    )
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--output-dir", default=None, help="default: <train.output_dir>/ablation")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="read run folders that hold a finished run of the same config (test ids)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
        # --rows is greedy: key=value words it swallowed are overrides (rows never hold "=")
        overrides = [w for w in args.rows if "=" in w] + args.overrides
        base = load_config(args.config, overrides)
        rows = [r.strip() for w in args.rows if "=" not in w for r in w.split(",") if r.strip()]
        rows = [REFERENCE] + [r for r in rows if r != REFERENCE]
        try:
            configs = {row: ablation_config(base, row) for row in rows}
        except ValueError as err:
            raise ConfigError(f"{err} (pass them to --rows, comma-separated)") from err
        if args.draws < 1:
            raise ConfigError(f"--draws must be at least 1, got {args.draws}")
        out_dir = Path(args.output_dir or Path(base.train.output_dir) / "ablation")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        extra = {"seeds": seeds, "split": args.split, "overrides": overrides}
        if args.draws == 1:
            md, _ = table(configs, seeds, out_dir, args, extra)
        else:
            first = base.data.synthetic.seed
            draws = {d: out_dir / f"draw{d}" for d in range(first, first + args.draws)}
            # every draw's configs before any training: a real data set is refused up front
            per_draw = {
                d: {row: draw_config(cfg, d) for row, cfg in configs.items()} for d in draws
            }
            summaries = {}
            for d, folder in draws.items():
                _, summaries[d] = table(per_draw[d], seeds, folder, args, extra)
            title = (
                f"Table 1 on {base.data.dataset}, draws {list(draws)} of the synthetic set, "
                f"{args.split} identities, seeds {seeds} in each"
            )
            health = run_health(list(draws.values()), rows, seeds)
            summary = summarise_draws(summaries, REFERENCE)
            extra = {**extra, "draws": list(draws)}
            md = write_tables(summary, REFERENCE, out_dir, title, extra, health, unit="draws")
        print(md.read_text())
        print(f"written to {md} and {out_dir / 'table.json'}")
        return 0

    return run_command(body, debug=args.debug, name="ablate")


def table(configs: dict, seeds: list[int], out_dir: Path, args, extra: dict) -> tuple[Path, dict]:
    """Train (or, with ``--reuse``, read) every row and seed into ``out_dir``; its tables."""
    data = next(iter(configs.values())).data
    title = f"Table 1 on {data.dataset} ({data.root}), {args.split} identities, seeds {seeds}"
    return run_table(
        configs,
        seeds,
        out_dir,
        REFERENCE,
        title=title,
        extra=extra,
        split=args.split,
        progress=not args.no_progress,
        reuse=args.reuse,
    )


if __name__ == "__main__":
    sys.exit(main())
