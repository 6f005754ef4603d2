"""Embed a gallery with a trained run and save it as a searchable faiss index.

    csetgraph index runs/my-run --split test --modality vis --output galleries/test-vis
    csetgraph index runs/my-run --split test --modality vis --output g/ --kind hnsw --calibrate
    csetgraph index runs/my-run --images photos/ --modality ir --output galleries/photos
    csetgraph index runs/my-run --split test --modality vis --output g/ --kind ivf --param nlist=64
    csetgraph index runs/my-run --split test --modality vis --output g/ --store galleries/g.db
    csetgraph index runs/my-run --split test --modality vis --output g/ --store milvus://db:19530
    csetgraph index add galleries/test-vis new1.jpg new2.jpg --camid 4 [--pid 17] [--time T]

``--split`` takes every image of that split and modality from the run's data set
(``data.root``; override it with ``data.root=...`` if the data moved); ``--images`` takes any
folder of images (identities and cameras unknown). ``--calibrate`` chooses the open-set
distance threshold on the ``--calibrate-split`` identities (default ``val``) at the
``--target-fmr`` false-match rate (default 1%): ``search`` and ``serve`` then mark results
beyond it "no match". With ``--split`` the protocol's camera rule (SYSU-MM01: a query from
camera 3 never sees camera 2) is stored and applied when a query's camera is given.

``--store`` keeps the vectors in Milvus instead of faiss files: ``PATH.db`` for Milvus Lite
(embedded, one local file) or ``milvus://HOST:PORT`` for a server or cluster (token from
``CSETGRAPH_MILVUS_TOKEN``); ``#NAME`` after either names the collection. The folder then
holds only ``manifest.json``. ``index add DIR IMAGES...`` embeds more images of the
gallery's modality with the index's run, copies them into ``DIR/uploads/`` and adds them
(logged durably, as the service's ``POST /gallery`` does).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from csetgraph.errors import ConfigError, DataFolderError, run_command

#: What an index folder may hold; anything else means it is somebody else's folder.
INDEX_NAMES = {"index.faiss", "metadata.json", "manifest.json", "additions.wal", "uploads"}


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
        "--store",
        default=None,
        metavar="URI",
        help="keep the vectors in Milvus: PATH.db (Milvus Lite) or milvus://HOST:PORT",
    )
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
    if names <= INDEX_NAMES:
        if overwrite:
            return
        raise DataFolderError(
            f"{str(folder)!r} already holds an index; pass --overwrite to replace it"
        )
    raise DataFolderError(
        f"{str(folder)!r} holds other files ({', '.join(sorted(names)[:3])}); "
        "pass an empty or new folder"
    )


def check_writable(folder: Path) -> None:
    """Refuse an output folder (or the folder it would be made in) that we cannot write."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataFolderError(
            f"--output {str(folder)!r}: cannot write into {str(probe)!r} (permission denied); "
            "pass a folder you can write"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["add"] and not Path("add").exists():
        return add_main(argv[1:])
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        output = Path(args.output)
        params = parse_params(args.param)
        check_output(output, args.overwrite)
        check_writable(output)
        store = None
        if args.store:
            from csetgraph.retrieval.milvus import parse_store

            store = parse_store(args.store, output)
        build = _build(args, params, store)
        try:
            build.index.save(output)
        except OSError as err:  # e.g. a read-only file system, which even root cannot write
            raise DataFolderError(
                f"cannot write the index into {str(output)!r} ({err.strerror or err}); "
                "pass a folder you can write"
            ) from None
        print(f"{output}: {len(build.index)} {args.modality} images, {build.index!r}")
        if build.calibration is not None:
            cal = build.calibration
            print(
                f"no-match threshold {cal.threshold:.4f} (cosine distance) at false-match rate "
                f"{cal.fmr:.2%} (target {cal.target_fmr:.2%}), true-match rate {cal.tmr:.2%}"
            )
        return 0

    return run_command(body, debug=args.debug, name="csetgraph index")


def _build(args: argparse.Namespace, params: dict[str, int], store: dict | None):
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
    from csetgraph.retrieval import check_params

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
            "root": str(Path(embedder.cfg.data.root).resolve()),
            "split": args.split,
        }
    check_params(args.kind, params, len(records))  # before anything is embedded
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
        store=store,
        overwrite=args.overwrite,
        **params,
    )
    build.index.manifest.source = source
    return build


def build_add_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph index add",
        description="Add images to a gallery index (embedded with its run, logged durably).",
    )
    parser.add_argument("index", help="an index folder written by `csetgraph index`")
    parser.add_argument("images", nargs="+", help="image files of the gallery's modality")
    parser.add_argument("--camid", type=int, required=True, help="the camera that took them")
    parser.add_argument("--pid", type=int, default=-1, help="their identity (-1: unknown)")
    parser.add_argument("--time", default=None, help="when they were taken (e.g. ISO 8601)")
    parser.add_argument(
        "--modality", default=None, choices=["vis", "ir"], help="default: the gallery's"
    )
    parser.add_argument("--run", default=None, help="the run folder, if it has moved")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def add_main(argv: list[str]) -> int:
    """``csetgraph index add DIR IMAGES...``: the command line's ``POST /gallery``."""
    args = build_add_parser().parse_intermixed_args(argv)

    def body() -> int:
        from csetgraph.data.records import load_image
        from csetgraph.deploy.searcher import GallerySearcher

        check_writable(Path(args.index))
        images = [load_image(path) for path in args.images]  # every file readable first
        searcher = GallerySearcher.from_folder(args.index, run=args.run, writable=True)
        try:
            modality = args.modality or searcher.modality or "vis"
            stored = [
                searcher.store_upload(Path(p).read_bytes(), Path(p).suffix) for p in args.images
            ]
            ids = searcher.add_images(
                images,
                stored,
                modality,
                args.camid,
                pid=args.pid,
                time=args.time,
                names=[Path(p).name for p in args.images],
            )
            size = len(searcher.index)
        finally:
            searcher.index.close()
        print(
            f"{args.index}: added {len(ids)} images (ids {', '.join(map(str, ids))}); "
            f"the gallery holds {size}"
        )
        return 0

    return run_command(body, debug=args.debug, name="csetgraph index add")


if __name__ == "__main__":
    raise SystemExit(main())
