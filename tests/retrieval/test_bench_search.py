"""benchmarks/bench_search.py --tiny runs every method, Milvus and additions included."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_benchmark_runs_with_the_database_and_additions(tmp_path, capsys):
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    if "bench_search" not in sys.modules:  # as test_default_params loads it
        spec = importlib.util.spec_from_file_location(
            "bench_search", ROOT / "benchmarks" / "bench_search.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_search"] = module
        spec.loader.exec_module(module)
    bench = sys.modules["bench_search"]
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
