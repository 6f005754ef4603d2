#!/usr/bin/env python
"""Save a trained run's model as a small safetensors file with its config in the metadata.

    python scripts/ship_weights.py runs/<run> weights/synthetic_cset.safetensors

Tensors in float16 (half the size), the run's config and the command in the metadata
(:mod:`csetgraph.models.shipped`; load with ``load_shipped_model``). An existing file is
kept unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csetgraph.engine.runs import load_run
from csetgraph.errors import ConfigError, run_command
from csetgraph.models.shipped import save_shipped_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", help="a run folder or checkpoint")
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)

    def body() -> int:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise ConfigError(f"{out} exists; pass --overwrite to replace it")
        model, cfg = load_run(args.run)
        command = "python scripts/ship_weights.py " + " ".join(sys.argv[1:])
        save_shipped_model(model, cfg, out, command=command)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        return 0

    return run_command(body, debug=args.debug, name="ship_weights")


if __name__ == "__main__":
    sys.exit(main())
