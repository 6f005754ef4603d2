"""Command-line pieces every command shares: dotted overrides and range-checked option types.

A ``section.key=value`` token on a command line is always a config override, wherever it
stands; argparse would otherwise hand it to a preceding option that takes several values.
The option types reject an out-of-range number while the line is parsed, so the user sees
one argparse message (exit status 2) before anything is loaded.
"""

from __future__ import annotations

import argparse
import re

from csetgraph.errors import ConfigError

#: A dotted config override (``section.key=value``, ``section.sub.key=[1, 2]``).
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Separate dotted ``key=value`` overrides from the paths an option swallowed.

    ``--checkpoint`` takes several paths, so argparse gives it everything up to the next
    option, overrides included; a ``section.key=value`` token is never a path here.

    Returns:
        ``(paths, overrides)``, each in line order.
    """
    overrides = [x for x in items if OVERRIDE.match(x)]
    return [x for x in items if not OVERRIDE.match(x)], overrides


def int_at_least(low: int):
    """An argparse type: an integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def take_overrides_from_checkpoints(args: argparse.Namespace) -> None:
    """Move the overrides ``--checkpoint`` swallowed to ``args.overrides``; refuse stray words.

    Raises:
        ConfigError: a positional word that is not a ``section.key=value`` override.
    """
    args.checkpoint, swallowed = split_overrides(args.checkpoint)
    args.overrides = swallowed + args.overrides
    stray = [x for x in args.overrides if not OVERRIDE.match(x)]
    if stray:
        raise ConfigError(
            f"{stray[0]!r} is not a dotted override: config overrides look like "
            "section.key=value (e.g. data.root=/data/SYSU-MM01); run folders go after "
            "--checkpoint"
        )
