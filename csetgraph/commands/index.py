"""Embed a gallery with a trained run and save it as a searchable faiss index.

    csetgraph index runs/my-run --split test --modality vis --output galleries/test-vis
    csetgraph index runs/my-run --split test --modality vis --output g/ --kind hnsw --calibrate
    csetgraph index runs/my-run --images photos/ --modality ir --output galleries/photos
    csetgraph index runs/my-run --split test --modality vis --output g/ --kind ivf --param nlist=64

``--split`` takes every image of that split and modality from the run's data set
(``data.root``; override it with ``data.root=...`` if the data moved); ``--images`` takes any
folder of images (identities and cameras unknown). ``--calibrate`` chooses the open-set
distance threshold on the ``--calibrate-split`` identities (default ``val``) at the
``--target-fmr`` false-match rate (default 1%): ``search`` and ``serve`` then mark results
beyond it "no match". With ``--split`` the protocol's camera rule (SYSU-MM01: a query from
camera 3 never sees camera 2) is stored and applied when a query's camera is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from csetgraph.errors import ConfigError, DataFolderError, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph index", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "items",
        nargs="+",
        metavar="RUN [key=value ...]",
        help="a run folder or checkpoint file, and dotted config overrides (any order)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--split", choices=["test", "val", "train"], help="data-set split")
    source.add_argument("--images", help="a folder of gallery images instead of a split")
    parser.add_argument("--modality", required=True, choices=["vis", "ir"])
    parser.add_argument("--output", "-o", required=True, help="folder for the index")
    parser.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"])
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="index parameter (nlist, nprobe, M, ef_construction, ef_search)",
    )
    parser.add_argument("--calibrate", action="store_true", help="calibrate a no-match threshold")
    parser.add_argument("--calibrate-split", default="val", choices=["val", "test", "train"])
    parser.add_argument("--target-fmr", type=float, default=0.01, help="false-match rate")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def parse_params(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ConfigError(f"--param {item!r}: expected NAME=INTEGER, e.g. --param nlist=64")
        out[name.strip()] = int(value)
    return out


def check_output(folder: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that holds anything but an index we may replace."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise DataFolderError(f"--output {str(folder)!r} is a file; pass a folder")
    names = {p.name for p in folder.iterdir()}
    if not names:
        return
    if names <= {"index.faiss", "metadata.json", "manifest.json"}:
        if overwrite:
            return
        raise DataFolderError(
            f"{str(folder)!r} already holds an index; pass --overwrite to replace it"
        )
    raise DataFolderError(
        f"{str(folder)!r} holds other files ({', '.join(sorted(names)[:3])}); "
        "pass an empty or new folder"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        output = Path(args.output)
        params = parse_params(args.param)
        check_output(output, args.overwrite)
        build = _build(args, params)
        build.index.save(output)
        print(f"{output}: {len(build.index)} {args.modality} images, {build.index!r}")
        if build.calibration is not None:
            cal = build.calibration
            print(
                f"no-match threshold {cal.threshold:.4f} (cosine distance) at false-match rate "
                f"{cal.fmr:.2%} (target {cal.target_fmr:.2%}), true-match rate {cal.tmr:.2%}"
            )
        return 0

    return run_command(body, debug=args.debug, name="csetgraph index")


def _build(args: argparse.Namespace, params: dict[str, int]):
    from csetgraph.data import get_dataset
    from csetgraph.data.records import other_modality
    from csetgraph.deploy.embedder import RunEmbedder, split_run_argument
    from csetgraph.deploy.gallery import (
        build_gallery,
        calibrate,
        camera_rule,
        folder_records,
        split_records,
    )

    run, overrides = split_run_argument(args.items)
    embedder = RunEmbedder.from_run(run, overrides=overrides)
    progress = not args.no_progress
    rule = {}
    if args.images is not None:
        records = folder_records(args.images, args.modality)
        source = {"images": str(Path(args.images).resolve())}
    else:
        split = split_records(embedder, args.split, args.modality)
        records = split[args.modality]
        protocol = get_dataset(embedder.cfg.data.dataset).PROTOCOL
        rule = camera_rule(
            protocol,
            [r.camid for r in split[other_modality(args.modality)]],
            [r.camid for r in records],
        )
        source = {
            "dataset": embedder.cfg.data.dataset,
            "root": str(embedder.cfg.data.root),
            "split": args.split,
        }
    calibration = None
    if args.calibrate:
        calibration = calibrate(
            embedder, args.calibrate_split, args.modality, args.target_fmr, progress
        )
    build = build_gallery(
        embedder,
        records,
        args.modality,
        kind=args.kind,
        exclude_cameras=rule,
        calibration=calibration,
        progress=progress,
        **params,
    )
    build.index.manifest.source = source
    return build


if __name__ == "__main__":
    raise SystemExit(main())
