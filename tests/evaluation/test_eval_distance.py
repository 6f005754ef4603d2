"""Tests for csetgraph.evaluation.metrics.pairwise_distance against scipy's cdist."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from csetgraph.evaluation import pairwise_distance


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_matches_scipy_cdist(metric):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(13, 6)), rng.normal(size=(17, 6))
    out = pairwise_distance(q, g, metric)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, cdist(q, g, metric), atol=1e-10)
    # Chunking does not change the numbers.
    np.testing.assert_allclose(pairwise_distance(q, g, metric, chunk_size=1), out, atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_in_torch_out(metric):
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    out = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), metric)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), cdist(q, g, metric), atol=1e-5)


def test_euclidean_self_distance_is_zero_not_nan():
    # A large common offset (as after a ReLU) must not wreck the small distances.
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(6, 8)) + 1000).astype(np.float32)
    d = pairwise_distance(x, x, "euclidean")
    assert not np.isnan(d).any()
    ref = cdist(x.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(d, ref, atol=1e-3)


def test_distance_bad_input():
    q = np.zeros((2, 3))
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(q, q, "manhattan")
    with pytest.raises(ValueError, match="same D"):
        pairwise_distance(q, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="both"):
        pairwise_distance(q, torch.zeros(2, 3))
