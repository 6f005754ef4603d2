#!/usr/bin/env python
"""Table 1: train and evaluate the six configurations (baseline, SE i2v / v2i / both, + CA,
+ MHGA) on one data set, and write the table as Markdown and JSON.

    python scripts/ablate.py                                    # synthetic default
    python scripts/ablate.py --config configs/regdb.yaml data.root=/data/RegDB data.trial=1
    python scripts/ablate.py --rows baseline "SE both" train.epochs=4

Every row uses the same recipe, seed and data; only the switches differ. Results land in
``<train.output_dir>/ablation/`` (one run folder per row, ``table.md``, ``table.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csetgraph.config import ConfigError, load_config
from csetgraph.engine import train
from csetgraph.models.ablation import TABLE1, ablation_config


def markdown_table(rows: dict[str, dict]) -> str:
    """Rank-1 and mAP (percent) of each setting (SYSU modes or RegDB/LLCM directions)."""
    settings = list(next(iter(rows.values())))
    header = "| configuration | " + " | ".join(f"{s} R-1 | {s} mAP" for s in settings) + " |"
    lines = [header, "|---" * (1 + 2 * len(settings)) + "|"]
    for name, res in rows.items():
        cells = []
        for s in settings:
            mean = res[s]["mean"]
            cells += [f"{100 * mean['rank1']:.2f}", f"{100 * mean['mAP']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None, help="recipe (default: built-in synthetic)")
    parser.add_argument(
        "--rows", nargs="*", default=[r[0] for r in TABLE1], help="Table 1 rows to run"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config, args.overrides)
        configs = {row: ablation_config(base, row) for row in args.rows}
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    out_dir = Path(base.train.output_dir) / "ablation"
    results = {}
    for row, cfg in configs.items():
        cfg.train.output_dir = str(out_dir)
        cfg.train.run_name = row.replace(" + ", "+").replace(" ", "_")
        results[row] = train(cfg, progress=not args.no_progress)["results"]
    table = markdown_table(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(
        f"Table 1 on {base.data.dataset} ({base.data.root})\n\n{table}\n"
    )
    (out_dir / "table.json").write_text(json.dumps(results, indent=2))
    print(table)
    print(f"\nwritten to {out_dir / 'table.md'} and {out_dir / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
