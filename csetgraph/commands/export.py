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
"""

from __future__ import annotations

import argparse

from csetgraph.errors import run_command


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
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch|")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        from csetgraph.deploy.embedder import RunEmbedder, split_run_argument
        from csetgraph.deploy.export import export_onnx

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
