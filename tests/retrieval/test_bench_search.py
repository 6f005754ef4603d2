"""benchmarks/bench_search.py --tiny runs every method, Milvus and additions included."""

from __future__ import annotations

import json

import pytest


def test_tiny_benchmark_runs_with_the_database_and_additions(bench_search, tmp_path, capsys):
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    bench = bench_search
    out = tmp_path / "tiny.json"
    kinds = ["numpy", "flat", "hnsw", "milvus"]
    assert bench.main(["--tiny", "--kinds", *kinds, "--json", str(out)]) == 0
    rows = {
        r["method"].split()[0] + " " + r["method"].split()[1]: r
        for r in json.loads(out.read_text())["rows"]
    }
    assert set(rows) == {"numpy brute", "faiss flat", "faiss hnsw", "milvus hnsw"}
    assert rows["faiss flat"]["recall@10"] == 1.0  # exact, against numpy's exact top 10
    assert rows["milvus hnsw"]["recall@10"] >= 0.95
    for name in ("faiss flat", "faiss hnsw", "milvus hnsw"):
        assert rows[name]["adds_per_s"] > 0 and rows[name]["qps_while_adding"] > 0
    assert "openblas" in capsys.readouterr().out  # the thread and BLAS settings are printed


def test_a_selector_keeps_faiss_flat_off_its_blas_path(bench_search):
    """The finding behind docs/deploy.md "faiss flat and numpy", by rounding (no timing):
    above faiss's BLAS threshold a plain search leaves the per-pair kernel's values, a
    search with a selector (even one that excludes nothing) keeps them exactly."""
    bench = bench_search
    rows = {(r["queries"], r["selector"]): r["equal_to_kernel"] for r in bench.which_path()}
    assert rows[(100, "none")] == 1.0 and rows[(100, "excludes nothing")] == 1.0
    assert rows[(200, "none")] < 0.5  # BLAS: another summation order
    assert rows[(200, "excludes nothing")] == 1.0  # the selector: still one pair at a time
