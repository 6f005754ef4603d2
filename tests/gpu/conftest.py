"""CUDA-only tests: marked ``cuda`` and skipped, with the reason "needs a CUDA device", on a
machine without one. Run them on a GPU machine with ``pytest -m cuda tests/gpu`` (or all of
``benchmarks/gpu_check.py``, which runs them first).

The skip is applied here to every test marked ``cuda`` that the session collected, so the
default ``pytest`` run lists them as skipped with their reason (``-ra``), never silently."""

from __future__ import annotations

import pytest
import torch

SKIP_REASON = "needs a CUDA device"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def cuda() -> torch.device:
    """The first GPU, where every test here computes."""
    return torch.device("cuda", 0)
