"""Export a run's visible and infrared embedders to ONNX, checked against PyTorch.

    csetgraph export runs/my-run --output exported/
    csetgraph export runs/my-run/checkpoints/best.pt --output exported/ --format onnx
    csetgraph export runs/sysu --output exported/ data.root=/data/SYSU-MM01   # moved data

Writes ``embed_vis.onnx`` and ``embed_ir.onnx`` (input ``images`` float32 ``(B, 3, H, W)``
normalised as the run's evaluation transform, output ``embeddings`` ``(B, D)`` L2-normalised,
dynamic batch) and ``preprocess.json`` (height, width, mean, std, each file's modality).
Each file is then run with ONNX Runtime at another batch size and compared with
``model.embed``; the maximum difference is printed and must be <= ``--tolerance``.
Positional ``key=value`` arguments override the run's config, anywhere on the line.

A folder that already holds any of the three files is refused (before the run is loaded)
unless ``--overwrite`` is given; other files in the folder are left alone.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from csetgraph.errors import ConfigError, DataFolderError, run_command

#: The files an export writes (the ONNX names are ``deploy.export.onnx_name`` of each modality).
EXPORT_FILES = ("embed_vis.onnx", "embed_ir.onnx", "preprocess.json")


def tolerance(text: str) -> float:
    """An argparse type: a finite number ``>= 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def check_output(folder: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a folder holding an export, unless ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {str(folder)!r} is a file; pass a folder for the export")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--output {str(folder)!r}: {str(parent)!r} is a file")
            break
    present = [name for name in EXPORT_FILES if (folder / name).exists()]
    if present and not overwrite:
        raise DataFolderError(
            f"{str(folder)!r} already holds an export ({', '.join(present)}); pass "
            "--overwrite to replace it, or choose another --output"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph export", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "items",
        nargs="+",
        metavar="RUN [key=value ...]",
        help="a run folder or checkpoint file, and dotted config overrides (any order)",
    )
    parser.add_argument("--output", "-o", required=True, help="folder for the exported files")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--tolerance", type=tolerance, default=1e-4, help="max |ONNX - PyTorch|")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        from csetgraph.deploy.embedder import RunEmbedder, split_run_argument
        from csetgraph.deploy.export import export_onnx

        check_output(Path(args.output), args.overwrite)
        run, overrides = split_run_argument(args.items)
        embedder = RunEmbedder.from_run(run, overrides=overrides)
        report = export_onnx(embedder, args.output, tolerance=args.tolerance)
        for modality, path in report.files.items():
            diff = report.max_abs_diff[modality]
            print(
                f"{path}: max |ONNX Runtime - PyTorch| = {diff:.2e} at batch {report.parity_batch}"
            )
        print(f"{report.folder}/preprocess.json ({report.seconds:.1f} s)")
        return 0

    return run_command(body, debug=args.debug, name="csetgraph export")


if __name__ == "__main__":
    raise SystemExit(main())
