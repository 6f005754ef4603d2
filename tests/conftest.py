"""Shared fixtures: a small synthetic SYSU-MM01 tree generated once per test session."""

from __future__ import annotations

import pytest
import torch

from csetgraph.data.synthetic import generate_sysu_mm01


@pytest.fixture(autouse=True)
def _few_threads():
    # Tiny tensors: thread start-up costs more than it saves, and CI has two cores.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sysu_root(tmp_path_factory):
    """A synthetic SYSU-MM01 tree: 6 train, 2 val, 4 test ids, 3 images per camera, 32x16."""
    root = tmp_path_factory.mktemp("sysu")
    return generate_sysu_mm01(
        root,
        num_train_ids=6,
        num_val_ids=2,
        num_test_ids=4,
        images_per_camera=3,
        height=32,
        width=16,
        seed=3,
        progress=False,
    )
