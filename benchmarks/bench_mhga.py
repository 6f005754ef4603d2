"""Benchmark: MHGA layers against PyG's GAT layers, forward + backward, side by side.

Two graphs, ``B`` image pairs of ``2N = 258`` token nodes (16 x 8 patches + class token per
image), width 384 in and out (4 heads x 96, concatenated):

* **complete** token graph (``B * 258**2`` edges, self loops included):
  ``DenseMHGAConv`` on the ``(258, 258)`` relation matrix, ``MHGAConv`` and PyG's
  ``GATConv(add_self_loops=False)`` on the same batched edge list, and PyG's
  ``DenseGATConv`` on an all-ones adjacency;
* **sparse** graph: each node's 16 nearest nodes of its pair (Euclidean, in feature space,
  itself included), ``MHGAConv`` against ``GATConv`` on the same edges.

Every layer runs in its own subprocess, so that its peak memory is its own: ``peak MB`` is
``ru_maxrss`` after the first forward + backward minus the resident set just before it
(inputs and weights already allocated), i.e. the working memory of one step. Time is the
median of ``--reps`` further steps, except on the sparse graph, where steps take
milliseconds: there the two layers are timed interleaved in one process (steps alternate,
median of ``--sparse-reps`` each), which is far less sensitive to the machine's noise.

Targets: ``DenseMHGAConv`` >= 30x faster and >= 30x lighter than ``GATConv`` on the
complete graph and within 1.1x of ``DenseGATConv``'s time; ``MHGAConv`` within 1.15x of
``GATConv``'s time on the sparse graph. Run (about 2-3 minutes at the defaults)::

    .venv/bin/python benchmarks/bench_mhga.py                 # B = 8 pairs, 1 thread
    .venv/bin/python benchmarks/bench_mhga.py --batch 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

H, W, WIDTH, HEADS, KNN = 16, 8, 384, 4, 16
COMPLETE = ("DenseMHGAConv", "MHGAConv", "GATConv", "DenseGATConv")
SPARSE = ("MHGAConv", "GATConv")


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0  # not Linux: the peak then includes the process' baseline


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _inputs(batch: int, seed: int = 0):
    from csetgraph.graph import relation_matrix

    gen = torch.Generator().manual_seed(seed)
    rel = relation_matrix(H, W)  # (2N, 2N)
    n = rel.size(0)
    x = torch.randn(batch, n, WIDTH, generator=gen)  # (B, 2N, C)
    grad = torch.randn(batch, n, HEADS * (WIDTH // HEADS), generator=gen)
    return x, rel, grad


def _complete_edges(rel: torch.Tensor, batch: int):
    n = rel.size(0)
    dst = torch.arange(n).repeat_interleave(n)
    src = torch.arange(n).repeat(n)
    offsets = (torch.arange(batch) * n).repeat_interleave(n * n)  # pair b's nodes start at b*n
    edge_index = torch.stack([src, dst]).repeat(1, batch) + offsets
    return edge_index, rel[dst, src].repeat(batch)


def _knn_edges(x: torch.Tensor, rel: torch.Tensor, k: int):
    b, n, _ = x.shape
    dist = torch.cdist(x, x)  # (B, n, n)
    src = dist.topk(k, dim=-1, largest=False).indices  # (B, n, k): k nearest sources of i
    dst = torch.arange(n).view(1, n, 1).expand(b, n, k)
    edge_type = rel[dst, src].reshape(-1)
    offsets = (torch.arange(b) * n).view(b, 1, 1)
    edge_index = torch.stack([(src + offsets).reshape(-1), (dst + offsets).reshape(-1)])
    return edge_index, edge_type


def _make_step(name: str, graph: str, batch: int):
    """Builds the layer and its inputs; returns a closure running forward + backward."""
    from torch_geometric.nn import DenseGATConv, GATConv

    from csetgraph.nn import DenseMHGAConv, MHGAConv

    torch.manual_seed(0)
    x, rel, grad = _inputs(batch)
    b, n, c = x.shape
    out_channels = WIDTH // HEADS
    if name == "DenseMHGAConv":
        layer = DenseMHGAConv(c, out_channels, heads=HEADS)
        args = (rel,)
        flat = False
    elif name == "DenseGATConv":
        layer = DenseGATConv(c, out_channels, heads=HEADS)
        args = (torch.ones(b, n, n), None, False)  # adj, mask, add_loop
        flat = False
    else:
        edge_index, edge_type = (
            _complete_edges(rel, b) if graph == "complete" else _knn_edges(x, rel, KNN)
        )
        if name == "MHGAConv":
            layer = MHGAConv(c, out_channels, heads=HEADS)
            args = (edge_index, edge_type)
        else:
            layer = GATConv(c, out_channels, heads=HEADS, add_self_loops=False)
            args = (edge_index,)
        flat = True
    x = x.reshape(b * n, c) if flat else x  # (B*2N, C) for the edge-list layers
    grad = grad.reshape(b * n, -1) if flat else grad
    x.requires_grad_(True)

    def step():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        out = layer(x, *args)
        out.backward(grad)

    return step


def _worker(name: str, graph: str, batch: int, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    step = _make_step(name, graph, batch)
    before = _current_rss_mb()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    peak = _peak_rss_mb() - before
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"time": statistics.median(times) if times else first, "peak_mb": peak}


def _interleaved(names, graph: str, batch: int, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    steps = {name: _make_step(name, graph, batch) for name in names}
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in names}
    for _ in range(reps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _run_child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="image pairs (258 nodes each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--reps", type=int, default=3, help="timed steps, complete graph")
    parser.add_argument("--sparse-reps", type=int, default=30, help="timed steps, sparse graph")
    parser.add_argument("--worker", nargs=2, metavar=("LAYER", "GRAPH"), help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", metavar="GRAPH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    if args.worker:
        name, graph = args.worker
        print(json.dumps(_worker(name, graph, args.batch, args.reps, args.threads)))
        return
    if args.interleaved:
        result = _interleaved(SPARSE, args.interleaved, args.batch, args.reps, args.threads)
        print(json.dumps(result))
        return

    common = ["--batch", str(args.batch), "--threads", str(args.threads)]
    n = 2 * (1 + H * W)
    print(
        f"MHGA forward+backward: B={args.batch} pairs x {n} nodes, width {WIDTH}, "
        f"{HEADS} heads, {args.threads} thread(s), torch {torch.__version__}"
    )
    rows = []
    for name in COMPLETE:
        res = _run_child([*common, "--reps", str(args.reps), "--worker", name, "complete"])
        rows.append(("complete", name, res))
    # Sparse steps take milliseconds, so the machine's noise matters: time the two layers
    # interleaved in one process; peak memory still comes from one process per layer.
    inter = _run_child([*common, "--reps", str(args.sparse_reps), "--interleaved", "sparse"])
    for name in SPARSE:
        res = _run_child([*common, "--reps", "1", "--worker", name, "sparse"])
        rows.append((f"knn-{KNN}", name, {"time": inter[name], "peak_mb": res["peak_mb"]}))

    ref = {graph: res for graph, name, res in rows if name == "GATConv"}
    edges = {"complete": args.batch * n * n, f"knn-{KNN}": args.batch * n * KNN}
    header = f"{'graph':<9} {'layer':<14} {'edges':>9} {'time ms':>9} {'peak MB':>9} "
    print(header + f"{'GAT/this time':>14} {'GAT/this mem':>13}")
    for graph, name, res in rows:
        gat = ref[graph]
        mem_ratio = gat["peak_mb"] / max(res["peak_mb"], 1e-3)
        print(
            f"{graph:<9} {name:<14} {edges[graph]:>9} {res['time'] * 1e3:>9.1f} "
            f"{res['peak_mb']:>9.1f} {gat['time'] / res['time']:>14.2f} {mem_ratio:>13.1f}"
        )

    by = {(graph, name): res for graph, name, res in rows}
    dense, gat = by["complete", "DenseMHGAConv"], by["complete", "GATConv"]
    dense_gat = by["complete", "DenseGATConv"]
    speed = gat["time"] / dense["time"]
    lightness = gat["peak_mb"] / dense["peak_mb"]
    vs_dense_gat = dense["time"] / dense_gat["time"]
    sparse_ratio = inter["MHGAConv"] / inter["GATConv"]
    checks = [
        # (label, measured, target, measured must be at least the target)
        ("DenseMHGAConv faster than GATConv (complete), x", speed, 30.0, True),
        ("DenseMHGAConv lighter than GATConv (complete), x", lightness, 30.0, True),
        ("DenseMHGAConv time / DenseGATConv time", vs_dense_gat, 1.1, False),
        ("MHGAConv time / GATConv time (knn, interleaved)", sparse_ratio, 1.15, False),
    ]
    print()
    for label, value, target, at_least in checks:
        ok = value >= target if at_least else value <= target
        bound = ">=" if at_least else "<="
        print(f"[{'ok' if ok else 'MISSED'}] {label}: {value:.2f} (target {bound} {target})")


if __name__ == "__main__":
    main()
