"""Evaluate trained CSET runs with the SYSU-MM01, RegDB or LLCM protocol.

    csetgraph evaluate --checkpoint runs/my_run                         # its own config and data
    csetgraph evaluate --checkpoint runs/sysu --root /data/SYSU-MM01 --mode all indoor
    csetgraph evaluate --checkpoint runs/sysu --gallery official --shots 10
    csetgraph evaluate --checkpoint runs/sysu --rerank                  # k-reciprocal re-ranking
    csetgraph evaluate --checkpoint runs/regdb_t1 ... runs/regdb_t10 --output regdb.json
    csetgraph evaluate --checkpoint runs/llcm data.root=/data/LLCM eval.trials=10

``--checkpoint`` takes a run folder (its ``checkpoints/last.pt``) or a checkpoint file; several
only for RegDB, whose protocol trains one model per trial (their results are pooled). The
config is the run folder's ``config.yaml`` (or the checkpoint's copy) unless ``--config`` is
given. Dotted ``section.key=value`` arguments override it wherever they stand on the line,
even right after ``--checkpoint``; the options below are applied after them.

The table (Rank-1/5/10/20, mAP, mINP in percent, mean ± std over trials) is printed, and the
results are written as JSON (default: ``<run>/eval_<dataset>[_<split>].json``). An existing
results file (the run's ``metrics.json``, an earlier evaluation) is refused before anything is
evaluated unless ``--overwrite`` is given. Result keys
are the SYSU-MM01 modes (``all``, ``indoor``) or the directions ``i2v`` / ``v2i``
(``<query>2<gallery>``, i = infrared, v = visible).

``--rerank`` re-ranks each trial's distances with the k-reciprocal function that published
re-ranked numbers use (Zhong et al. 2017; k1=20, k2=6, lambda=0.3): see docs/evaluation.md.

A user mistake (a config value, a data-set folder, a checkpoint) prints one line and exits
with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csetgraph.commands.arguments import (
    int_at_least,
    take_overrides_from_checkpoints,
)
from csetgraph.config import AMP_MODES, Config, apply_overrides, config_from_dict, config_to_dict
from csetgraph.errors import ConfigError, DataFolderError, DatasetLayoutError, run_command
from csetgraph.files import write_atomic


def _regdb_trial(text: str) -> int:
    value = int_at_least(1)(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"RegDB has trials 1 to 10, got {value}")
    return value


def option_overrides(args: argparse.Namespace, cfg_dataset: str) -> list[str]:
    """The dotted overrides the command-line options stand for (applied after the others)."""
    if args.dataset is not None and args.dataset != cfg_dataset and args.root is None:
        raise ConfigError(
            f"--dataset {args.dataset} differs from the run's data set ({cfg_dataset}): pass "
            "--root with the folder of that data set"
        )
    pairs = [
        ("data.dataset", args.dataset),
        ("data.root", args.root),
        ("eval.modes", None if args.mode is None else f"[{', '.join(args.mode)}]"),
        ("eval.trials", args.trials),
        ("data.trial", args.trial),
        ("eval.flip", "true" if args.flip else None),
        ("eval.metric", args.metric),
        ("eval.batch_size", args.batch_size),
        ("eval.amp", args.amp),
        ("data.num_workers", args.num_workers),
    ]
    return [f"{key}={value}" for key, value in pairs if value is not None]


def load_checkpoint_config(checkpoint: str, args: argparse.Namespace) -> tuple[dict, Config]:
    """The checkpoint and its effective config: the run's, then overrides, then options."""
    from csetgraph.engine.runs import resolve_run_config
    from csetgraph.engine.training_state import load_checkpoint
    from csetgraph.evaluation.protocols import check_eval_config

    ckpt = load_checkpoint(checkpoint)
    saved = resolve_run_config(checkpoint, ckpt, args.config, args.overrides)
    options = option_overrides(args, saved.data.dataset)  # applied after the user's overrides
    cfg = config_from_dict(apply_overrides(config_to_dict(saved), options))
    check_eval_config(cfg)
    return ckpt, cfg


def evaluate_checkpoint(
    checkpoint: str, ckpt: dict, cfg: Config, args: argparse.Namespace
) -> tuple[Config, dict, str]:
    """Rebuild the model of one checkpoint and run its data set's protocol.

    Returns:
        The effective config, the results, and the data set's fingerprint digest.
    """
    from csetgraph.data.build import ids_without_images_warning
    from csetgraph.engine.distributed import resolve_device
    from csetgraph.engine.runs import eval_transform, model_from_checkpoint
    from csetgraph.evaluation.protocols import evaluate_dataset

    warning = ids_without_images_warning(cfg.data, args.split)
    if warning:
        print(f"csetgraph evaluate: warning: {warning}", file=sys.stderr)
    option = "--device" if args.device else "train.device"
    device = resolve_device(args.device or cfg.train.device, option=option)
    model = model_from_checkpoint(ckpt, cfg, checkpoint, device)
    results = evaluate_dataset(
        model,
        cfg,
        device=device,
        transform=eval_transform(model, cfg),
        split=args.split,
        progress=not args.no_progress,
        shots=args.shots,
        gallery=args.gallery,
        rerank=args.rerank,
    )
    # After the protocol: a folder it cannot read is reported once, by the protocol.
    fingerprint = warn_if_data_changed(checkpoint, cfg)
    return cfg, results, fingerprint["digest"]


def warn_if_data_changed(checkpoint: str, cfg: Config) -> dict:
    """Warn on stderr when the data set differs from the one the run trained on.

    The run's ``fingerprint.json`` (written by training) holds the training data's
    fingerprint (:func:`csetgraph.data.dataset_fingerprint`); a copy of a data set with other
    files, sizes or identities, or a data set changed by its authors since, gives numbers
    that are not comparable with the run's own. Runs without the file are not checked.

    Returns:
        The current data set's fingerprint summary (recorded in the results JSON); its
        ``digest`` is ``None`` when the folder could not be fingerprinted.
    """
    from csetgraph.data import compare_fingerprints, dataset_fingerprint
    from csetgraph.engine.runs import run_folder

    try:
        current = dataset_fingerprint(cfg.data.root, cfg.data.dataset, cfg.data.trial).to_dict()
    except DatasetLayoutError as err:
        # The fingerprint reads every split; a folder holding only what the evaluation needs
        # can still be evaluated (a real layout error is reported by the protocol itself).
        print(f"csetgraph evaluate: warning: data set not fingerprinted: {err}", file=sys.stderr)
        return {"digest": None}
    path = run_folder(checkpoint) / "fingerprint.json"
    recorded = json.loads(path.read_text()).get("train") if path.is_file() else None
    changes = compare_fingerprints(recorded, current) if recorded else []
    if changes:
        print(
            f"csetgraph evaluate: warning: the data set at {cfg.data.root} differs from the "
            f"one {checkpoint} trained on ({'; '.join(changes)}); its numbers are not "
            "comparable with the run's own",
            file=sys.stderr,
        )
    return current


def combine_runs(per_run: list[dict]) -> dict:
    """Pool RegDB runs (one model per trial): each direction's trials, then mean and std."""
    from csetgraph.evaluation.protocols import summarise

    combined = {}
    for name in per_run[0]:
        trials = [t for res in per_run for t in res[name]["trials"]]
        combined[name] = {
            **summarise(trials),
            "protocol": per_run[0][name]["protocol"],
            "query": per_run[0][name]["query"],
            "gallery": per_run[0][name]["gallery"],
            "trial_numbers": [t for res in per_run for t in res[name]["trial_numbers"]],
        }
    return combined


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a temporary file in the folder, then a rename)."""
    write_atomic(path, json.dumps(obj, indent=2))


def build_parser() -> argparse.ArgumentParser:
    from csetgraph.data import DATASETS

    p = argparse.ArgumentParser(
        prog="csetgraph evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="run folder(s) or checkpoint file(s); several only for RegDB (one per trial)",
    )
    p.add_argument("--config", default=None, help="YAML recipe (default: the run's config)")
    p.add_argument("--dataset", choices=list(DATASETS), default=None, help="data set protocol")
    p.add_argument("--root", default=None, help="data set folder (data.root)")
    p.add_argument("--mode", nargs="+", choices=("all", "indoor"), help="SYSU-MM01 modes")
    p.add_argument("--trials", type=int_at_least(1), help="SYSU-MM01/LLCM gallery draws")
    p.add_argument("--trial", type=_regdb_trial, help="RegDB split 1-10 (data.trial)")
    p.add_argument(
        "--shots", type=int_at_least(1), default=1, help="SYSU-MM01 gallery images per id/camera"
    )
    p.add_argument(
        "--gallery",
        choices=("random", "official"),
        default="random",
        help="SYSU-MM01 gallery draw: seeded random.choice, or exp/rand_perm_cam.mat",
    )
    p.add_argument("--split", choices=("test", "val"), default="test", help="test or val ids")
    p.add_argument("--flip", action="store_true", help="average with mirrored images")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (reference)")
    p.add_argument("--metric", choices=("cosine", "euclidean"), default=None)
    p.add_argument("--batch-size", type=int_at_least(1), default=None)
    p.add_argument("--num-workers", type=int_at_least(0), default=None)
    p.add_argument("--amp", choices=AMP_MODES, help="eval.amp")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--output", default=None, help="JSON file for the results")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing results file (--output)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.batch_size=64")
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Combinations of options that cannot work, refused before anything is loaded."""
    take_overrides_from_checkpoints(args)
    if not args.checkpoint:
        raise ConfigError("--checkpoint needs a run folder or a checkpoint file")
    if len(args.checkpoint) > 1 and args.trial is not None:
        raise ConfigError(
            "--trial applies to one checkpoint; with several, each RegDB run uses its own "
            "data.trial"
        )
    if len(args.checkpoint) > 1 and args.output is None:
        raise ConfigError("with several checkpoints, pass --output for the combined JSON")


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse, before anything is evaluated, an output that is a folder or an existing
    file (the run's ``metrics.json``, earlier results) unless ``--overwrite``."""
    if output.is_dir():
        raise ConfigError(
            f"--output {str(output)!r} is a folder; pass a file for the results, e.g. "
            f"{str(output / 'results.json')!r}"
        )
    if output.exists() and not overwrite:
        raise DataFolderError(
            f"{str(output)!r} already exists; pass --overwrite to replace it, or choose "
            "another --output"
        )
    for folder in output.parents:
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--output {str(output)!r}: {str(folder)!r} is a file")
            break


def report(args: argparse.Namespace, runs: list[tuple[Config, dict, str]]) -> dict:
    """The JSON report: what was evaluated, with which settings, and the results."""
    from csetgraph.evaluation.protocols import format_table

    for checkpoint, (cfg, res, _) in zip(args.checkpoint, runs, strict=True):
        extra = f", trial {cfg.data.trial}" if cfg.data.dataset == "regdb" else ""
        print(format_table(res, title=f"{checkpoint}: {cfg.data.dataset} {args.split}{extra}"))
    results = runs[0][1] if len(runs) == 1 else combine_runs([r for _, r, _ in runs])
    if len(runs) > 1:
        print(format_table(results, title=f"RegDB, mean over {len(runs)} runs"))
    cfg = runs[0][0]
    out = {
        "checkpoints": args.checkpoint,
        "dataset": cfg.data.dataset,
        "root": cfg.data.root,
        "split": args.split,
        "settings": {
            "modes": cfg.eval.modes,
            "trials": cfg.eval.trials,
            "regdb_trials": [c.data.trial for c, _, _ in runs],
            "shots": args.shots,
            "gallery": args.gallery,
            "flip": cfg.eval.flip,
            "rerank": args.rerank,
            "metric": cfg.eval.metric,
            "amp": cfg.eval.amp,
        },
        "data_fingerprints": [digest for _, _, digest in runs],
        "results": results,
    }
    if len(runs) > 1:
        out["per_run"] = [r for _, r, _ in runs]
    return out


def run(args: argparse.Namespace) -> int:
    """The command's body: evaluate every checkpoint, print the tables, write the JSON."""
    from csetgraph.engine.runs import run_folder

    check_arguments(args)
    loaded = [load_checkpoint_config(c, args) for c in args.checkpoint]
    datasets = {cfg.data.dataset for _, cfg in loaded}
    if len(loaded) > 1 and datasets != {"regdb"}:
        raise ConfigError(
            "several checkpoints are only for RegDB (one model per trial); got "
            f"{', '.join(sorted(datasets))}: evaluate the runs one at a time"
        )
    suffix = "" if args.split == "test" else f"_{args.split}"
    default = run_folder(args.checkpoint[0]) / f"eval_{loaded[0][1].data.dataset}{suffix}.json"
    output = Path(args.output) if args.output else default
    check_output(output, args.overwrite)
    runs = [
        evaluate_checkpoint(path, ckpt, cfg, args)
        for path, (ckpt, cfg) in zip(args.checkpoint, loaded, strict=True)
    ]
    out = report(args, runs)
    write_json(output, out)
    print(f"results written to {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    return run_command(lambda: run(args), debug=args.debug, name="csetgraph evaluate")


if __name__ == "__main__":
    raise SystemExit(main())
