"""Clustered unit-norm embeddings, like a re-id gallery: identities are tight clusters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _metadata(n: int, seed: int, cameras: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"path": f"g/{i}.jpg", "pid": int(i % 50), "camid": int(c), "modality": "vis"}
        for i, c in enumerate(rng.integers(1, cameras + 1, n))
    ]


@pytest.fixture(scope="session")
def gallery():
    """4,000 items of width 64 in 200 clusters, with metadata and 100 queries."""
    feats = _clustered(4000, 64, 200, seed=0)
    rng = np.random.default_rng(1)
    q = feats[rng.choice(len(feats), 100, replace=False)] + 0.3 * rng.standard_normal((100, 64))
    queries = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return feats, _metadata(len(feats), seed=2), queries


@pytest.fixture(scope="session")
def clustered():
    """``clustered(n, dim, clusters, seed)``: unit rows drawn around ``clusters`` centres."""
    return _clustered


@pytest.fixture(scope="session")
def metadata():
    """``metadata(n, seed)``: path, pid, camid (1-6) and modality per gallery item."""
    return _metadata


def _recall_at_10(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)]))


@pytest.fixture(scope="session")
def recall_at_10():
    """``recall_at_10(approx, exact)``: the mean share of each exact top 10 that was found."""
    return _recall_at_10


@pytest.fixture(scope="session")
def bench_search():
    """``benchmarks/bench_search.py`` as a module (its gallery recipe, ``main``, ``which_path``)."""
    if "bench_search" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bench_search", ROOT / "benchmarks" / "bench_search.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_search"] = module  # dataclasses in the module look themselves up
        spec.loader.exec_module(module)
    return sys.modules["bench_search"]
