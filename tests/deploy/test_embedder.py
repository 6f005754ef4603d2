"""RunEmbedder.embed_images: PIL images of any mode go through the shared conversion."""

from __future__ import annotations

import numpy as np
from PIL import Image

from csetgraph.deploy.embedder import RunEmbedder


def test_a_16_bit_thermal_image_embeds_as_its_8_bit_picture(tiny_run):
    """A library user's 16-bit PIL image is scaled by its range (as load_image does), not
    clipped to white by a plain convert("RGB")."""
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, size=(40, 20), dtype=np.uint8)
    eight[0, 0], eight[0, 1] = 0, 255  # the full 8-bit range, so scaling by range is exact
    counts = eight.astype(np.int32) * 40 + 5000  # a thermal camera's narrow band
    sixteen = Image.fromarray(counts, mode="I")
    assert np.asarray(sixteen.convert("L")).min() == 255  # what clipping would have given
    embedder = RunEmbedder.from_run(tiny_run["dir"], device="cpu")
    ours = embedder.embed_images([sixteen], "ir")
    reference = embedder.embed_images([Image.fromarray(eight).convert("RGB")], "ir")
    np.testing.assert_allclose(ours, reference, atol=1e-6)
