"""Mechanism health of a trained run: is each CSET mechanism doing anything?

    csetgraph inspect runs/cset                 # last epoch (first epoch beside it) + verdicts
    csetgraph inspect runs/cset --epoch 3       # another recorded epoch
    csetgraph inspect runs/cset --json          # the section as JSON, verdicts recomputed

Training records, per epoch, the statistics of the similarity exchange (per exchange layer
and direction), the cross attention, the triplet loss and MHGA (see docs/training.md,
"Mechanism health"); they are in the ``mechanisms`` section of the run's ``metrics.json``.
For a run that has not been evaluated yet, ``checkpoints/last.pt`` holds the epochs so far.
Each mechanism gets a verdict, ``alive``, ``weak`` or ``degenerate``, with the numbers that
decided it.

A user mistake (no such run, a run without health statistics, an epoch it did not record)
prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from csetgraph.commands.arguments import int_at_least
from csetgraph.errors import ConfigError, RunFolderError, run_command

#: Readable names of the statistics, by the last part of their key.
LABELS = {
    "tokens_per_image": "tokens exchanged per image",
    "a_diagonal": "mean diagonal of A (eq. 1)",
    "same_position": "same-position exchanges",
    "mean_score": "mean score S of the exchanged edges",
    "class_cosine": "cosine of mixed vs clean class token, last block",
    "distill": "cross-distillation term",
    "ce": "cross-entropy term",
    "entropy": "entropy of the CA logits (nats)",
    "loss": "triplet term",
    "active": "active triplets (loss > 0)",
    "pos_dist": "mean hardest-positive distance",
    "neg_dist": "mean hardest-negative distance",
}
#: Statistics shown in percent.
_SHARES = {"same_position", "active"}
_GROUPS = (
    ("SE", "se/"),
    ("CA", "ca/"),
    ("triplet", "triplet/"),
    ("triplet, second term on the W' heads", "triplet_heads/"),
    ("MHGA", "mhga/"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph inspect",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("run", help="run folder (written by csetgraph train)")
    parser.add_argument("--epoch", type=int_at_least(1), help="epoch to show (default: last)")
    parser.add_argument("--json", action="store_true", help="print the section as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def load_mechanisms(run: str | Path) -> tuple[dict, str]:
    """The ``mechanisms`` section of a run and where it was read from.

    Raises:
        RunFolderError: no such folder, no record in it, or a record without the section.
    """
    run = Path(run)
    if not run.is_dir():
        raise RunFolderError(
            f"no run folder {str(run)!r}; pass a folder written by csetgraph train"
        )
    metrics = run / "metrics.json"
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFolderError(f"{str(metrics)!r} is not valid JSON ({err})") from err
        source = str(metrics)
    elif (run / "checkpoints" / "last.pt").is_file():
        from csetgraph.engine.checkpoint import load_checkpoint

        data = load_checkpoint(run)
        source = f"{run / 'checkpoints' / 'last.pt'} (the run has not been evaluated yet)"
    else:
        raise RunFolderError(
            f"{str(run)!r} holds neither metrics.json nor checkpoints/last.pt; pass a run "
            "folder written by csetgraph train"
        )
    section = data.get("mechanisms") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not section.get("epochs"):
        raise RunFolderError(
            f"{source} records no mechanism health: the run was trained before csetgraph "
            "recorded it (or trained no epoch); train it again to get the statistics"
        )
    return section, source


def pick_epoch(section: dict, epoch: int | None) -> dict:
    """The recorded ``{"epoch", "stats"}`` of ``epoch`` (default: the last)."""
    epochs = section["epochs"]
    if epoch is None:
        return epochs[-1]
    for entry in epochs:
        if entry["epoch"] == epoch:
            return entry
    recorded = ", ".join(str(e["epoch"]) for e in epochs)
    raise ConfigError(f"--epoch {epoch} was not recorded; this run recorded epochs {recorded}")


def label(key: str) -> str:
    """``se/block2/i2v/same_position`` -> ``block 2 i2v: same-position exchanges``."""
    parts = key.split("/")
    name = parts[-1]
    if parts[0] == "mhga":
        if name.startswith("uniform_"):
            return f"{name[len('uniform_') :]}: mass under uniform attention"
        return f"{name}: attention mass"
    where = [p.replace("block", "block ") for p in parts[1:-1]]
    text = LABELS.get(name, name)
    return f"{' '.join(where)}: {text}" if where else text


def value_text(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key.split("/")[-1] in _SHARES:
        return f"{100 * value:.1f}%"
    return f"{value:.4g}"


def report(section: dict, entry: dict, source: str) -> str:
    """The printed report: per mechanism the statistics (first and chosen epoch), verdicts."""
    from csetgraph.engine.health import TRIPLET_FEATURES, verdicts

    static = section.get("static", {})
    first = section["epochs"][0]
    stats = entry["stats"]
    compare = first["epoch"] != entry["epoch"]
    lines = [f"mechanism health from {source}", f"epoch {entry['epoch']}"]
    if compare:
        lines[-1] += f" (epoch {first['epoch']} in the first column)"
    width = max((len(label(k)) for k in stats), default=0)
    for name, prefix in _GROUPS:
        keys = [k for k in stats if k.startswith(prefix)]
        if not keys:
            continue
        lines.append("")
        head = name
        if name == "triplet" and static.get("triplet_feature") in TRIPLET_FEATURES:
            head += f": trains {TRIPLET_FEATURES[static['triplet_feature']]}"
            if "triplet_margin" in static:
                head += f", margin {static['triplet_margin']:g}"
        lines.append(head)
        for k in keys:
            cells = [value_text(k, first["stats"].get(k))] if compare else []
            cells.append(value_text(k, stats[k]))
            lines.append(f"  {label(k):<{width}}  " + "  ".join(f"{c:>8}" for c in cells))
    lines += ["", "verdicts (thresholds: docs/training.md, 'Mechanism health')"]
    found = verdicts(stats, static)
    for mechanism, level, findings in found:
        lines.append(f"  {mechanism}: {level}: {findings[0]}")
        lines += [f"      {text}" for text in findings[1:]]
    if not found:
        lines.append("  no mechanism recorded a statistic")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from csetgraph.engine.health import verdicts

    section, source = load_mechanisms(args.run)
    entry = pick_epoch(section, args.epoch)
    if args.json:
        static = section.get("static", {})
        out = {
            "source": source,
            "epoch": entry["epoch"],
            "stats": entry["stats"],
            "static": static,
            "verdicts": [
                {"mechanism": m, "level": lv, "findings": f}
                for m, lv, f in verdicts(entry["stats"], static)
            ],
        }
        print(json.dumps(out, indent=2))
    else:
        print(report(section, entry, source))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args), debug=args.debug, name="csetgraph inspect")


if __name__ == "__main__":
    raise SystemExit(main())
