"""Benchmark: vectorised ``rank_metrics`` against a per-query loop, side by side.

Two cases, every measurement in its own subprocess so that peak memory is per case:

* **SYSU-sized**: 3,803 queries (IR cameras 3 and 6) x 301 gallery images (RGB cameras
  1, 2, 4, 5), 96 identities, 10 trials (a new gallery per trial), protocol ``"sysu"``.
  The loop is written here in the style of the community reference code (``eval_sysu``,
  one query at a time, ``np.argsort(kind="stable")`` of the whole matrix first). The
  numbers of both are asserted identical (CMC exactly, mAP / mINP to 1e-12).
* **Large**: 10,000 queries x 100,000 gallery images (2,000 identities), float32, stored
  as a 4 GB ``np.memmap`` on disk that ``rank_metrics`` reads chunk by chunk. The loop
  runs on the first ``--loop-queries`` rows only (it would take many minutes on all);
  its time is extrapolated linearly to 10,000 queries and its numbers on that subset
  are asserted identical to ``rank_metrics`` on the same subset.

Memory: ``peak RSS`` is ``VmHWM`` of the worker process (torch and numpy imports
included, about 0.4 GB); it includes pages of the
memmap that were read (file-backed and reclaimable by the kernel). ``peak anon`` is the
highest anonymous resident memory (``RssAnon``, sampled every 10 ms) minus the value
just before the timed call, i.e. the working memory the computation allocated beyond its
inputs. Run::

    .venv/bin/python benchmarks/bench_rank_metrics.py            # both cases
    .venv/bin/python benchmarks/bench_rank_metrics.py --quick    # small large-case
    .venv/bin/python benchmarks/bench_rank_metrics.py --skip-large --sysu-trials 1  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from csetgraph.evaluation import rank_metrics
from csetgraph.files import write_atomic

# --------------------------------------------------------------------------------------
# The straightforward per-query loop (reference-code style, stable sort, short-list padding)
# --------------------------------------------------------------------------------------


def loop_rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    """SYSU rules, one query at a time, like Ye et al.'s ``eval_sysu``."""
    num_q = distmat.shape[0]
    indices = np.argsort(distmat, axis=1, kind="stable")
    pred_label = g_pids[indices]
    matches = (pred_label == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (q_camids[q_idx] == 3) & (g_camids[order] == 2)
        keep = np.invert(remove)
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        new_cmc = pred_label[q_idx][keep]
        new_index = np.unique(new_cmc, return_index=True)[1]
        new_cmc = np.array([new_cmc[index] for index in sorted(new_index)])
        new_cmc = (new_cmc == q_pids[q_idx]).astype(np.int32).cumsum()
        if len(new_cmc) < max_rank:
            new_cmc = np.concatenate([new_cmc, np.full(max_rank - len(new_cmc), new_cmc[-1])])
        all_cmc.append(new_cmc[:max_rank])
        cmc = orig_cmc.cumsum()
        pos_max_idx = np.max(np.where(orig_cmc == 1))
        all_inp.append(cmc[pos_max_idx] / (pos_max_idx + 1.0))
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(cmc)]) * orig_cmc
        all_ap.append(tmp_cmc.sum() / orig_cmc.sum())
    cmc = np.asarray(all_cmc).sum(0) / len(all_cmc)
    return {"cmc": cmc.tolist(), "mAP": float(np.mean(all_ap)), "mINP": float(np.mean(all_inp))}


def vec_rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    res = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, "sysu", max_rank=max_rank)
    return {"cmc": res.cmc.tolist(), "mAP": res.mAP, "mINP": res.mINP}


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

SYSU_IDS, SYSU_QUERIES, SYSU_GALLERY, SYSU_TRIALS = 96, 3803, 301, 10


def sysu_case(trial: int):
    """A SYSU-sized case: fixed queries, a new gallery per trial (like the real protocol)."""
    rng = np.random.default_rng(0)
    q_pids = rng.integers(0, SYSU_IDS, SYSU_QUERIES)
    q_cams = rng.choice([3, 6], SYSU_QUERIES)
    q_feat = rng.normal(size=(SYSU_IDS, 32))[q_pids] + 1.5 * rng.normal(size=(SYSU_QUERIES, 32))
    rng = np.random.default_rng(1000 + trial)
    g_pids = rng.integers(0, SYSU_IDS, SYSU_GALLERY)
    g_cams = rng.choice([1, 2, 4, 5], SYSU_GALLERY)
    g_feat = np.random.default_rng(0).normal(size=(SYSU_IDS, 32))[g_pids]
    g_feat = g_feat + 1.5 * rng.normal(size=(SYSU_GALLERY, 32))
    # Rounded distances create ties, which the stable sort must order by gallery index.
    distmat = np.round(((q_feat[:, None, :] - g_feat[None]) ** 2).sum(-1), 0).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def large_labels(num_q: int, num_g: int, num_ids: int = 2000):
    rng = np.random.default_rng(1)
    q_pids = rng.integers(0, num_ids, num_q)
    q_cams = rng.choice([3, 6], num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    g_cams = rng.choice([1, 2, 4, 5], num_g)
    return q_pids, g_pids, q_cams, g_cams


def write_large_memmap(path: Path, num_q: int, num_g: int) -> None:
    """Random float32 distances, 0.02 lower for true matches, written block by block."""
    q_pids, g_pids, _, _ = large_labels(num_q, num_g)
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(num_q, num_g))
    rng = np.random.default_rng(2)
    for start in range(0, num_q, 500):
        stop = min(start + 500, num_q)
        block = rng.random((stop - start, num_g), dtype=np.float32)
        # True matches slightly closer: realistic, far from perfect scores.
        block -= 0.02 * (q_pids[start:stop, None] == g_pids[None, :])
        mm[start:stop] = block
    mm.flush()
    del mm


# --------------------------------------------------------------------------------------
# Worker: one timed measurement, in its own process
# --------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rss_anon_kb() -> int:
    return _status_kb("RssAnon")


class _AnonPeak:
    """Samples RssAnon in a background thread; peak minus the value at start."""

    def __enter__(self):
        self.base = _rss_anon_kb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon_kb())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon_kb())
        self.extra_mb = (self.peak - self.base) / 1024


def worker(args) -> None:
    impl = loop_rank_metrics if args.impl == "loop" else vec_rank_metrics
    results = []
    if args.case == "sysu":
        cases = [sysu_case(t) for t in range(args.sysu_trials)]
        with _AnonPeak() as mem:
            t0 = time.perf_counter()
            for case in cases:
                results.append(impl(*case))
            elapsed = time.perf_counter() - t0
    else:
        num_q, num_g = args.large_shape
        q_pids, g_pids, q_cams, g_cams = large_labels(num_q, num_g)
        distmat = np.memmap(args.memmap, dtype=np.float32, mode="r", shape=(num_q, num_g))
        n = args.rows or num_q
        with _AnonPeak() as mem:
            t0 = time.perf_counter()
            # The loop needs the rows in memory (it argsorts the whole matrix at once).
            d = np.asarray(distmat[:n]) if args.impl == "loop" else distmat[:n]
            results.append(impl(d, q_pids[:n], g_pids, q_cams[:n], g_cams))
            elapsed = time.perf_counter() - t0
    out = {
        "time": elapsed,
        # VmHWM (this process's peak RSS); ru_maxrss would include the parent's peak
        # at fork time, which Linux carries across exec.
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "peak_anon_extra_mb": mem.extra_mb,
        "results": results,
    }
    write_atomic(args.out, json.dumps(out))


def run_worker(case: str, impl: str, extra: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, "--worker", case, impl, "--out", out, *extra]
    subprocess.run(cmd, check=True)
    data = json.loads(Path(out).read_text())
    os.unlink(out)
    return data


def assert_identical(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.float64(x["cmc"]), np.float64(y["cmc"]))
        assert abs(x["mAP"] - y["mAP"]) <= 1e-12, (x["mAP"], y["mAP"])
        assert abs(x["mINP"] - y["mINP"]) <= 1e-12, (x["mINP"], y["mINP"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--memmap", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--large-shape", type=int, nargs=2, default=[10_000, 100_000])
    p.add_argument(
        "--loop-queries",
        type=int,
        default=200,
        help="queries of the large case the loop runs on (time extrapolated)",
    )
    p.add_argument("--skip-large", action="store_true")
    p.add_argument(
        "--sysu-trials", type=int, default=SYSU_TRIALS, help="SYSU-sized galleries (default 10)"
    )
    p.add_argument("--quick", action="store_true", help="large case 2,000 x 20,000")
    p.add_argument("--tmpdir", default=None, help="where to write the large memmap")
    args = p.parse_args()
    if args.worker:
        args.case, args.impl = args.worker
        worker(args)
        return
    if args.quick:
        args.large_shape = [2000, 20_000]

    rows = []
    print(
        f"SYSU-sized: {SYSU_QUERIES} queries x {SYSU_GALLERY} gallery x {args.sysu_trials} trials",
        flush=True,
    )
    trials = ["--sysu-trials", str(args.sysu_trials)]
    loop = run_worker("sysu", "loop", trials)
    vec = run_worker("sysu", "vec", trials)
    assert_identical(loop["results"], vec["results"])
    rows.append((f"SYSU-sized, {args.sysu_trials} trials", loop, vec, 1.0))

    if not args.skip_large:
        num_q, num_g = args.large_shape
        shape = ["--large-shape", str(num_q), str(num_g)]
        with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
            path = Path(tmp) / "distmat.f32"
            print(
                f"Large: writing a {num_q} x {num_g} float32 memmap "
                f"({num_q * num_g * 4 / 1e9:.1f} GB) ...",
                flush=True,
            )
            write_large_memmap(path, num_q, num_g)
            common = [*shape, "--memmap", str(path)]
            n = min(args.loop_queries, num_q)
            loop = run_worker("large", "loop", [*common, "--rows", str(n)])
            vec_sub = run_worker("large", "vec", [*common, "--rows", str(n)])
            assert_identical(loop["results"], vec_sub["results"])
            vec = run_worker("large", "vec", common)
        rows.append((f"Large {num_q}x{num_g} (loop on {n} rows)", loop, vec, num_q / n))
        print(
            f"Large case: rank-1 {vec['results'][0]['cmc'][0]:.4f}, "
            f"mAP {vec['results'][0]['mAP']:.4f}"
        )
        print(
            "rank_metrics working memory (+anon) on the large gallery: "
            f"{vec_sub['peak_anon_extra_mb']:.0f} MB for {n} queries, "
            f"{vec['peak_anon_extra_mb']:.0f} MB for {num_q} queries (bounded by the chunk)"
        )

    print()
    header = (
        f"{'case':38s} {'loop s':>9s} {'vec s':>8s} {'speed-up':>9s} "
        f"{'loop RSS MB':>11s} {'vec RSS MB':>10s} {'loop +anon':>10s} {'vec +anon':>9s}"
    )
    print(header)
    print("-" * len(header))
    for name, lp, vc, scale in rows:
        lt = lp["time"] * scale
        mark = "~" if scale != 1.0 else " "
        print(
            f"{name:38s} {mark}{lt:8.2f} {vc['time']:8.2f} {lt / vc['time']:8.1f}x "
            f"{lp['peak_rss_mb']:11.0f} {vc['peak_rss_mb']:10.0f} "
            f"{lp['peak_anon_extra_mb']:10.0f} {vc['peak_anon_extra_mb']:9.0f}"
        )
    print("\n~ loop time extrapolated linearly from its subset; loop memory is for the subset.")
    print("Numbers (CMC, mAP, mINP) asserted identical between loop and rank_metrics.")


if __name__ == "__main__":
    main()
