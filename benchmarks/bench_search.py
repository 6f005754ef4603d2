#!/usr/bin/env python
"""Gallery search side by side: numpy brute force, faiss flat, IVF and HNSW.

    python benchmarks/bench_search.py                                  # 1,000,000 x 768, 10,000 q
    python benchmarks/bench_search.py --gallery 20000 --queries 500    # a quick look
    python benchmarks/bench_search.py --kinds flat hnsw --threads 2 --json search.json

A synthetic gallery of clustered unit-norm embeddings (identities are tight clusters, as a
re-id model's are; D = 768 as full CSET with ViT-S: class token and MHGA feature) is searched
by queries drawn near gallery items. Each method reports its build time, queries per second,
the memory its index adds (resident-set growth) and recall@10 against the exact top 10. All
methods use the same ``--threads``; the index kinds use :mod:`csetgraph.retrieval` with its
default parameters, so the numbers are those ``csetgraph index --kind`` gives.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np

from csetgraph.retrieval import GalleryIndex, default_params


def rss_bytes() -> int:
    """The process's resident set size (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def clustered_gallery(n: int, dim: int, clusters: int, seed: int, chunk: int = 100_000):
    """``(n, dim)`` float32 unit rows around ``clusters`` random centres, made in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x = centres[rng.integers(0, clusters, stop - start)]
        x += 0.35 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def queries_near(gallery: np.ndarray, q: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = gallery[rng.choice(len(gallery), q, replace=False)]
    x = x + 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def numpy_top_k(gallery, queries, k: int, chunk: int = 65_536):
    """Exact top-k by cosine distance, the gallery walked in chunks (a running top-k merge)."""
    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(gallery), chunk):
        dist = 1.0 - queries @ gallery[start : start + chunk].T  # (Q, chunk)
        kk = min(k, dist.shape[1])
        part = np.argpartition(dist, kk - 1, axis=1)[:, :kk]
        d = np.concatenate([best_d, np.take_along_axis(dist, part, 1)], axis=1)
        i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
    return best_d, best_i


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact, strict=True)]))


def run_numpy(gallery, queries, k):
    start = time.perf_counter()
    _, idx = numpy_top_k(gallery, queries, k)
    secs = time.perf_counter() - start
    return {
        "method": "numpy brute force (chunked)",
        "build_s": 0.0,
        "index_mb": 0.0,
        "qps": len(queries) / secs,
        "search_s": secs,
    }, idx


def run_kind(kind, gallery, queries, k, meta):
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = GalleryIndex.build(gallery, meta, kind=kind)
    build = time.perf_counter() - start
    grown = (rss_bytes() - before) / 2**20
    start = time.perf_counter()
    _, idx = index.search(queries, k)
    secs = time.perf_counter() - start
    row = {
        "method": f"faiss {kind}",
        "params": index.manifest.params,
        "build_s": build,
        "index_mb": grown,
        "qps": len(queries) / secs,
        "search_s": secs,
    }
    del index
    gc.collect()
    return row, idx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=None, help="default: gallery / 20")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["numpy", "flat", "ivf", "hnsw"],
        choices=["numpy", "flat", "ivf", "hnsw"],
    )
    parser.add_argument("--threads", type=int, default=1, help="faiss and BLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    clusters = args.clusters or max(1, args.gallery // 20)
    start = time.perf_counter()
    gallery = clustered_gallery(args.gallery, args.dim, clusters, args.seed)
    queries = queries_near(gallery, args.queries, args.seed + 1)
    print(
        f"gallery {args.gallery:,} x {args.dim} ({gallery.nbytes / 2**20:,.0f} MiB, "
        f"{clusters:,} clusters), {args.queries:,} queries, k={args.k}, "
        f"threads={args.threads}; made in {time.perf_counter() - start:.1f} s"
    )
    meta = [{"path": "", "pid": -1, "camid": -1, "modality": "vis"}] * args.gallery
    rows, exact = [], None
    for kind in args.kinds:
        row, idx = (
            run_numpy(gallery, queries, args.k)
            if kind == "numpy"
            else run_kind(kind, gallery, queries, args.k, meta)
        )
        if exact is None and kind in ("numpy", "flat"):
            exact = idx
        row["recall@10"] = None if exact is None else recall_at_k(idx, exact)
        rows.append(row)
        print(f"  done: {row['method']}", flush=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "defaults": {k: default_params(k, args.gallery) for k in ("ivf", "hnsw")},
                    "rows": rows,
                },
                fh,
                indent=2,
            )
    return 0


def print_table(rows: list[dict]) -> None:
    print(f"\n{'method':<30} {'build s':>9} {'queries/s':>11} {'index MiB':>10} {'recall@10':>10}")
    for r in rows:
        recall = "-" if r["recall@10"] is None else f"{r['recall@10']:.3f}"
        print(
            f"{r['method']:<30} {r['build_s']:>9.1f} {r['qps']:>11,.0f} "
            f"{r['index_mb']:>10,.0f} {recall:>10}"
        )
    for r in rows:
        if r.get("params"):
            print(f"  {r['method']}: {r['params']}")


if __name__ == "__main__":
    raise SystemExit(main())
