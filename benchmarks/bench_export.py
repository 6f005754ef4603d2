#!/usr/bin/env python
"""ONNX Runtime against PyTorch: images/s of the exported embedders, and their parity.

    python benchmarks/bench_export.py runs/my-run                     # export, then time both
    python benchmarks/bench_export.py runs/my-run --export exported/  # reuse an export
    python benchmarks/bench_export.py runs/my-run --batch 64 --iters 20 --threads 2

For each modality the same batch of normalised images goes through ``model.embed`` (PyTorch,
no autograd) and through ``embed_<modality>.onnx`` (ONNX Runtime, CPU provider), both with
``--threads`` intra-op threads, after ``--warmup`` untimed calls. Prints images/s of each,
the speed ratio, and the maximum absolute difference of the embeddings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from csetgraph.data.records import MODALITIES
from csetgraph.deploy.embedder import RunEmbedder
from csetgraph.deploy.export import OnnxEmbedder, export_onnx, onnx_name
from csetgraph.files import write_atomic


def images_per_second(call, batch, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        call(batch)
    start = time.perf_counter()
    for _ in range(iters):
        call(batch)
    return iters * len(batch) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run", help="a run folder or checkpoint file")
    parser.add_argument("--export", default=None, help="an existing export folder to reuse")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    embedder = RunEmbedder.from_run(args.run)
    folder = Path(args.export or tempfile.mkdtemp(prefix="csetgraph-export-"))
    if args.export is None:
        report = export_onnx(embedder, folder)
        print(f"exported to {folder} in {report.seconds:.1f} s")
    h, w = embedder.preprocess["height"], embedder.preprocess["width"]
    images = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    rows = []
    for modality in MODALITIES:
        onnx = OnnxEmbedder(folder / onnx_name(modality), threads=args.threads)
        diff = float(np.abs(onnx(images.numpy()) - embedder.embed_tensor(images, modality)).max())
        torch_ips = images_per_second(
            lambda x, m=modality: embedder.embed_tensor(x, m), images, args.iters, args.warmup
        )
        onnx_ips = images_per_second(onnx, images.numpy(), args.iters, args.warmup)
        rows.append(
            {
                "modality": modality,
                "pytorch_ips": torch_ips,
                "onnxruntime_ips": onnx_ips,
                "max_abs_diff": diff,
            }
        )
    print(f"\nbatch {args.batch} of {h}x{w}, {args.threads} thread(s), {args.iters} timed calls")
    head = ("modality", "PyTorch img/s", "ORT img/s", "ORT/PyTorch", "max|diff|")
    print(f"{head[0]:<9} {head[1]:>14} {head[2]:>10} {head[3]:>12} {head[4]:>10}")
    for r in rows:
        ratio = r["onnxruntime_ips"] / r["pytorch_ips"]
        print(
            f"{r['modality']:<9} {r['pytorch_ips']:>14,.1f} {r['onnxruntime_ips']:>10,.1f} "
            f"{ratio:>11.2f}x {r['max_abs_diff']:>10.1e}"
        )
    if args.json:
        write_atomic(args.json, json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
