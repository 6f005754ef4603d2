"""The training loader on a GPU: pinned batches copied without waiting, and the tensor path's
augmentation run on the GPU against the CPU path."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from csetgraph.config import DataConfig
from csetgraph.data.batch_transforms import AugmentParams
from csetgraph.data.build import build_train_data
from csetgraph.data.pipeline import batch_seed, build_train_loader
from csetgraph.data.samplers import CrossModalityIdentitySampler

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PAPER_AUGMENTATION = dict(pad=4, flip_prob=0.5, erasing_prob=0.5, grayscale_prob=0.2)
CASES = [("tensor", 0), ("tensor", 2), ("pil", 0), ("pil", 2)]


def test_the_case_list_is_not_empty():
    assert CASES


@pytest.fixture
def setup(sysu_root, tmp_path):
    """The session's 32x16 synthetic SYSU tree, trained at 24x12 with the paper's augmentation."""
    cfg = DataConfig(
        root=str(sysu_root), height=24, width=12, num_workers=0, cache_dir=str(tmp_path / "c"),
        **PAPER_AUGMENTATION,
    )  # fmt: skip
    return cfg, build_train_data(cfg)


def loader_for(cfg, data, device, seed=0, **kwargs):
    vis, ir = [r.pid for r in data.vis], [r.pid for r in data.ir]
    sampler = CrossModalityIdentitySampler(vis, ir, 2, 2, seed=0)
    return build_train_loader(
        cfg, data.vis, data.ir, sampler, device, MEAN, STD, seed=seed, progress=False, **kwargs
    )


def epoch(loader, number):
    loader.set_epoch(number)
    return list(loader)


@pytest.mark.cuda
@pytest.mark.parametrize(("pipeline", "workers"), CASES)
def test_batches_are_pinned_and_copied_non_blocking(setup, cuda, monkeypatch, pipeline, workers):
    cfg, data = setup
    cfg = dataclasses.replace(cfg, pipeline=pipeline, num_workers=workers)
    loader = loader_for(cfg, data, cuda)
    assert loader.loader.pin_memory
    raw = next(iter(loader_for(cfg, data, cuda).loader))  # what the DataLoader hands over
    host = [t for t in raw if isinstance(t, torch.Tensor)]
    assert host and all(t.is_pinned() for t in host)
    copies = []
    to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        out = to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type == "cuda":
            copies.append((self.is_pinned(), kwargs.get("non_blocking", False)))
        return out

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    batches = epoch(loader, 0)
    monkeypatch.undo()
    assert batches and all(t.device == cuda for batch in batches for t in batch)
    assert copies, "no host-to-GPU copy was seen"
    assert all(pinned and non_blocking for pinned, non_blocking in copies), copies


@pytest.mark.cuda
def test_a_pinned_non_blocking_copy_returns_while_the_gpu_is_busy(cuda):
    src = torch.randint(0, 255, (64, 3, 256, 128), dtype=torch.uint8).pin_memory()  # a batch
    torch.cuda.synchronize(cuda)
    torch.cuda._sleep(500_000_000)  # keeps the stream busy for 0.25 s (2 GHz) to 1.5 s
    t0 = time.perf_counter()
    dst = src.to(cuda, non_blocking=True)
    returned = time.perf_counter() - t0
    busy = not torch.cuda.current_stream(cuda).query()
    torch.cuda.synchronize(cuda)
    assert busy, f"the copy waited for the GPU ({returned:.3f} s)"
    assert torch.equal(dst.cpu(), src)


@pytest.mark.cuda
def test_the_gpu_executes_the_cpu_paths_draws_to_the_same_batch(setup, cuda):
    """The CPU path draws each batch's augmentation from a CPU generator seeded with the
    batch's seed and applies it image by image; the GPU's batched ops, given those draws,
    produce the same batch."""
    cfg, data = setup
    cfg = dataclasses.replace(cfg, pipeline="tensor")
    cpu_batches = epoch(loader_for(cfg, data, "cpu", seed=7), 1)
    raw_loader = loader_for(cfg, data, "cpu", seed=7, augment_in_workers=False)
    augment = raw_loader.augment
    raw_loader.set_epoch(1)
    compared = 0
    for (images, _, seed), cpu_batch in zip(raw_loader.loader, cpu_batches, strict=True):
        params = augment.sample(
            images.shape[0], images.shape[-2:], torch.device("cpu"),
            torch.Generator().manual_seed(seed),
        )  # fmt: skip
        on_gpu = AugmentParams(*(t.to(cuda) for t in dataclasses.astuple(params)))
        gpu = augment.apply_batched(images.to(cuda), on_gpu)
        expected = torch.cat(cpu_batch[:2])  # (2B, 3, H, W): visible then infrared
        torch.testing.assert_close(gpu.cpu(), expected, rtol=0, atol=1e-6)
        compared += 1
    assert compared == len(cpu_batches) > 0


@pytest.mark.cuda
def test_the_gpu_loader_draws_from_each_batchs_seed_on_the_device(setup, cuda):
    """On a GPU the draws come from a CUDA generator seeded with the batch's seed: the batches
    are reproducible and do not depend on the worker count (CUDA's random stream is not the
    CPU's, so they are not the CPU run's batches)."""
    cfg, data = setup
    cfg = dataclasses.replace(cfg, pipeline="tensor")
    first = epoch(loader_for(cfg, data, cuda, seed=7), 2)
    again = epoch(loader_for(dataclasses.replace(cfg, num_workers=2), data, cuda, seed=7), 2)
    raw_loader = loader_for(cfg, data, "cpu", seed=7, augment_in_workers=False)
    raw_loader.set_epoch(2)
    assert len(first) == len(again) > 0
    for k, ((images, _, seed), a, b) in enumerate(
        zip(raw_loader.loader, first, again, strict=True)
    ):
        assert seed == batch_seed(7, 2, k)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
        want = raw_loader.augment(images.to(cuda), torch.Generator(cuda).manual_seed(seed))
        assert torch.equal(torch.cat(a[:2]), want)
