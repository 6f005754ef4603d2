#!/usr/bin/env python
"""Train CSET.

    python scripts/train.py                                   # the synthetic CPU default
    python scripts/train.py --config configs/sysu_mm01.yaml data.root=/data/SYSU-MM01
    python scripts/train.py --config configs/synthetic.yaml train.epochs=3 model.depth=4

Positional ``key=value`` arguments override the config (dotted keys, YAML values).
"""

from __future__ import annotations

import argparse
import sys

from csetgraph.config import ConfigError, load_config
from csetgraph.engine import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML recipe (default: built-in synthetic)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    train(cfg, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
