"""Train CSET.

    csetgraph train                                            # the synthetic CPU default
    csetgraph train --config configs/sysu_mm01.yaml data.root=/data/SYSU-MM01
    csetgraph train --config configs/synthetic.yaml train.epochs=3 model.depth=4
    csetgraph train train.resume=runs/my-run                   # continue a run where it stopped
    csetgraph train train.resume=runs/my-run train.epochs=12   # ... and extend it

Positional ``key=value`` arguments override the config (dotted keys, YAML values); they may
stand anywhere on the line. A run name that already holds a run is refused: resume it, pick
another ``train.run_name``, or set ``train.overwrite=true`` to move the old run aside.

Resuming: the run's own config (stored in its checkpoint) is used. Without ``--config`` only the
overrides on the line are compared with it; with ``--config`` the whole recipe is. Options that
differ are refused by name, except those safe to change (``train.epochs``, ``eval.*``,
``train.num_threads``, ``train.log_every``, ``train.device``, ``train.compile``,
``data.num_workers``), which are logged and recorded in the run's ``resumes.json``.
"""

from __future__ import annotations

import argparse

from csetgraph.config import Config, load_config
from csetgraph.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML recipe (default: built-in synthetic)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    return parser


def resolve_config(config: str | None, overrides: list[str]) -> Config:
    """The recipe with its overrides; on resume without a recipe, the run's own config."""
    cfg = load_config(config, overrides)
    if not cfg.train.resume or config is not None:
        return cfg
    from csetgraph.engine.run_guard import check_resumable
    from csetgraph.engine.runs import checkpoint_config
    from csetgraph.engine.training_state import check_resumable_checkpoint, load_checkpoint

    check_resumable(cfg.train.resume)
    ckpt = load_checkpoint(cfg.train.resume)
    check_resumable_checkpoint(ckpt, cfg.train.resume)
    return checkpoint_config(ckpt, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        from csetgraph.engine.trainer import train

        train(resolve_config(args.config, args.overrides), progress=not args.no_progress)
        return 0

    return run_command(body, debug=args.debug, name="csetgraph train")


if __name__ == "__main__":
    raise SystemExit(main())
