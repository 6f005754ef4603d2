"""Evaluation feature extraction: features stay on the device, autocast, pinned memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from csetgraph.data import sysu_mm01
from csetgraph.data.records import load_image
from csetgraph.errors import ConfigError
from csetgraph.evaluation.features import eval_autocast, extract_features, loader_options
from csetgraph.models import CSET, EncoderOptions

TRANSFORM = T.Compose([T.Resize((64, 32)), T.ToTensor()])


class PixelMeanModel(torch.nn.Module):
    """``embed``: per-channel means and standard deviations, computed where the images are."""

    def embed(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        feat = torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)  # (B, 6)
        return torch.nn.functional.normalize(feat, dim=1)


class ShapeOnlyModel(torch.nn.Module):
    """``embed`` on the meta device: only shapes, so it works wherever the images are."""

    def embed(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        return images.new_zeros(images.shape[0], 5)


@pytest.fixture(scope="module")
def records(sysu_root):
    query, _ = sysu_mm01.test_split(sysu_root, "all", 0)
    return query[:11]


def test_features_equal_a_per_image_loop_and_flip(records):
    model = PixelMeanModel()
    out = extract_features(model, records, "ir", transform=TRANSFORM, batch_size=4, progress=False)
    images = [TRANSFORM(load_image(r.path))[None] for r in records]
    expected = torch.cat([model.embed(x, "ir") for x in images])
    torch.testing.assert_close(out, expected)
    flipped = extract_features(
        model, records, "ir", transform=TRANSFORM, batch_size=4, flip=True, progress=False
    )
    mirror = torch.cat([model.embed(torch.flip(x, dims=[3]), "ir") for x in images])
    torch.testing.assert_close(
        flipped, torch.nn.functional.normalize(expected + mirror, dim=1), atol=1e-6, rtol=0
    )


def test_features_stay_on_the_device_without_a_copy_per_batch(records, monkeypatch):
    # On the meta device nothing can be copied back without failing the test below: the
    # result is on "meta" only if no batch went through .cpu() or .to("cpu").
    out = extract_features(
        ShapeOnlyModel(), records, "ir", transform=TRANSFORM, batch_size=3, device="meta"
    )
    assert out.device.type == "meta" and out.shape == (len(records), 5)
    # And on the CPU: a spy on Tensor.cpu sees no call during extraction.
    calls = []
    real_cpu = torch.Tensor.cpu

    def spy(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", spy)
    extract_features(PixelMeanModel(), records, "ir", transform=TRANSFORM, batch_size=3)
    assert calls == []


def test_bf16_autocast_on_cpu_is_close_to_fp32(records):
    torch.manual_seed(0)
    model = CSET(
        5,
        encoder=EncoderOptions(
            backbone="vit_tiny_patch16_224",
            img_size=(64, 32),
            embed_dim=32,
            depth=2,
            num_heads=2,
            drop_path_rate=0.0,
        ),
    )
    kw = dict(transform=TRANSFORM, batch_size=4, progress=False)
    fp32 = extract_features(model, records, "ir", amp="off", **kw)
    bf16 = extract_features(model, records, "ir", amp="bf16", **kw)
    assert bf16.dtype == torch.float32  # features come back in float32 whatever the autocast
    assert not torch.equal(bf16, fp32)  # autocast did run the forward pass in bf16
    cosine = (bf16 * fp32).sum(dim=1) / (bf16.norm(dim=1) * fp32.norm(dim=1))
    assert cosine.min() > 0.99
    # "auto" on the CPU means fp32: bit-identical to "off".
    torch.testing.assert_close(extract_features(model, records, "ir", **kw), fp32, rtol=0, atol=0)


def test_autocast_choice_per_device(monkeypatch):
    assert not isinstance(eval_autocast("auto", "cpu"), torch.autocast)
    assert not isinstance(eval_autocast("off", "cuda"), torch.autocast)
    cpu_bf16 = eval_autocast("bf16", "cpu")
    assert cpu_bf16.device == "cpu" and cpu_bf16.fast_dtype == torch.bfloat16
    for native, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation, n=native: n
        )
        with warnings.catch_warnings():  # a CPU-only build warns that it disables CUDA autocast
            warnings.simplefilter("ignore")
            ctx = eval_autocast("auto", "cuda:0")
        assert ctx.device == "cuda" and ctx.fast_dtype == dtype
    with pytest.raises(ConfigError, match=r"eval\.amp must be one of auto, off, bf16, fp16"):
        eval_autocast("fp8", "cpu")


def test_loader_pins_memory_for_cuda_only():
    assert loader_options("cuda:0", 2) == dict(
        pin_memory=True, num_workers=2, persistent_workers=False
    )
    assert loader_options(torch.device("cpu"), 0)["pin_memory"] is False


def test_no_records_gives_an_empty_matrix_and_keeps_the_mode(records):
    model = PixelMeanModel().train()
    out = extract_features(model, [], "ir", transform=TRANSFORM, progress=False)
    assert out.shape == (0, 0) and model.training
    extract_features(model, records[:2], "ir", transform=TRANSFORM, progress=False)
    assert model.training  # restored after the pass
    assert np.isfinite(out.numpy()).all()
