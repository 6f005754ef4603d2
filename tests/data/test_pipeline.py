"""The training loader: the tensor path against the PIL reference, reproducibility, the PIL path
unchanged, and the global random stream left alone."""

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from csetgraph.config import DataConfig
from csetgraph.data.build import build_train_data
from csetgraph.data.torch_datasets import PairedDataset
from csetgraph.data.pipeline import build_train_loader
from csetgraph.data.samplers import CrossModalityIdentitySampler
from csetgraph.data.transforms import build_train_transform
from csetgraph.errors import ConfigError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NO_AUGMENTATION = dict(pad=0, flip_prob=0.0, erasing_prob=0.0, grayscale_prob=0.0)
PAPER_AUGMENTATION = dict(pad=4, flip_prob=0.5, erasing_prob=0.5, grayscale_prob=0.2)


@pytest.fixture
def setup(sysu_root, tmp_path):
    """A data config on the session's 32x16 synthetic SYSU tree, trained at 24x12 (a resize)."""
    cfg = DataConfig(
        root=str(sysu_root), height=24, width=12, num_workers=0, cache_dir=str(tmp_path / "c")
    )
    return cfg, build_train_data(cfg)


def make_sampler(data, seed=0):
    vis, ir = [r.pid for r in data.vis], [r.pid for r in data.ir]
    return CrossModalityIdentitySampler(vis, ir, 2, 2, seed=seed)


def loader_for(cfg, data, **kwargs):
    return build_train_loader(
        cfg, data.vis, data.ir, make_sampler(data), torch.device("cpu"), MEAN, STD,
        progress=False, **kwargs,
    )  # fmt: skip


def epoch_batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return list(loader)


def assert_same_batches(a, b):
    assert len(a) == len(b) and len(a) > 0
    for batch_a, batch_b in zip(a, b, strict=True):
        for x, y in zip(batch_a, batch_b, strict=True):
            assert torch.equal(x, y)


def test_without_augmentation_the_tensor_path_equals_the_pil_path(setup):
    cfg, data = setup
    pil = epoch_batches(
        loader_for(dataclasses.replace(cfg, pipeline="pil", **NO_AUGMENTATION), data)
    )
    tensor = epoch_batches(
        loader_for(dataclasses.replace(cfg, pipeline="tensor", **NO_AUGMENTATION), data)
    )
    # Same resize (Pillow's), same ToTensor/Normalize op order: equal to the bit.
    assert_same_batches(tensor, pil)
    vis, ir, vis_pid, ir_pid = tensor[0]
    assert vis.shape == ir.shape == (4, 3, 24, 12) and vis.dtype == torch.float32
    assert torch.equal(vis_pid, ir_pid)  # the sampler's aligned pairs


def test_the_pil_path_is_the_reference_loader_unchanged(setup):
    """``data.pipeline=pil`` gives the batches, and leaves the global random state, that a
    DataLoader over PairedDataset with the PIL transforms gives (the trainer's old loader)."""
    cfg = dataclasses.replace(setup[0], pipeline="pil", **PAPER_AUGMENTATION)
    data = setup[1]
    transform = build_train_transform(24, 12, mean=MEAN, std=STD, **PAPER_AUGMENTATION)
    torch.manual_seed(3)
    reference = DataLoader(
        PairedDataset(data.vis, data.ir, transform), batch_sampler=make_sampler(data)
    )
    expected = [list(reference) for _ in range(2)]
    expected_state = torch.get_rng_state()
    torch.manual_seed(3)
    loader = loader_for(cfg, data)
    got = [epoch_batches(loader, 0), epoch_batches(loader, 0)]
    for a, b in zip(got, expected, strict=True):
        assert_same_batches(a, b)
    assert torch.equal(torch.get_rng_state(), expected_state)


def test_augmented_batches_do_not_depend_on_workers_or_where_they_are_augmented(setup):
    cfg = dataclasses.replace(setup[0], pipeline="tensor", **PAPER_AUGMENTATION)
    data = setup[1]
    in_main = epoch_batches(loader_for(cfg, data), epoch=1)
    two_workers = loader_for(dataclasses.replace(cfg, num_workers=2), data)
    assert_same_batches(epoch_batches(two_workers, epoch=1), in_main)
    # The accelerator route (uint8 to the device, augmented there), taken on the CPU here.
    for workers in (0, 2):  # uint8 batches read in the main process, or in workers
        on_device = loader_for(
            dataclasses.replace(cfg, num_workers=workers), data, augment_in_workers=False
        )
        assert on_device.augment is not None
        assert_same_batches(epoch_batches(on_device, epoch=1), in_main)


def test_epochs_are_reproducible_and_a_fresh_loader_resumes_them(setup):
    cfg = dataclasses.replace(setup[0], pipeline="tensor", **PAPER_AUGMENTATION)
    data = setup[1]
    loader = loader_for(cfg, data)
    first, second = epoch_batches(loader, 0), epoch_batches(loader, 1)
    assert not torch.equal(first[0][0], second[0][0])
    assert_same_batches(epoch_batches(loader, 0), first)
    resumed = loader_for(cfg, data)  # a new process resuming at epoch 1
    assert_same_batches(epoch_batches(resumed, 1), second)


def test_setting_the_samplers_epoch_selects_the_augmentation_too(setup):
    """The trainer sets the sampler's epoch; the augmentation seeds must follow it."""
    cfg = dataclasses.replace(setup[0], pipeline="tensor", **PAPER_AUGMENTATION)
    data = setup[1]
    expected = epoch_batches(loader_for(cfg, data), epoch=3)
    sampler = make_sampler(data)
    loader = build_train_loader(cfg, data.vis, data.ir, sampler, "cpu", MEAN, STD, progress=False)
    sampler.set_epoch(3)
    assert_same_batches(list(loader), expected)


def test_pids_follow_the_sampler(setup):
    cfg = dataclasses.replace(setup[0], pipeline="tensor")
    data = setup[1]
    sampler = make_sampler(data)
    loader = build_train_loader(cfg, data.vis, data.ir, sampler, "cpu", MEAN, STD, progress=False)
    loader.set_epoch(2)
    batches = list(loader)
    sampler.set_epoch(2)
    for (_, _, vis_pid, ir_pid), pairs in zip(batches, list(sampler), strict=True):
        assert vis_pid.tolist() == [data.vis[v].pid for v, _ in pairs]
        assert ir_pid.tolist() == [data.ir[i].pid for _, i in pairs]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_the_tensor_path_leaves_the_global_random_state_alone(setup, num_workers):
    """Dropout and the rest draw from the global stream; the loader (cache build included)
    must not, or a resumed run would drift from an uninterrupted one."""
    cfg = dataclasses.replace(
        setup[0], pipeline="tensor", num_workers=num_workers, **PAPER_AUGMENTATION
    )
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader = loader_for(cfg, setup[1])
    epoch_batches(loader, 0)
    epoch_batches(loader, 1)
    assert torch.equal(torch.get_rng_state(), before)


def test_unknown_pipeline_is_a_config_error(setup):
    cfg = dataclasses.replace(setup[0], pipeline="dali")
    with pytest.raises(ConfigError, match=r"data\.pipeline must be one of tensor, pil"):
        loader_for(cfg, setup[1])


def test_training_reads_the_cache_and_does_not_depend_on_the_worker_count(tiny_config, tmp_path):
    """The trainer's data stage uses the configured pipeline: a tensor-path run caches into
    data.cache_dir, and one and two workers train to the same weights (seeds per batch)."""
    from csetgraph.config import load_config
    from csetgraph.engine import train

    weights = []
    for workers in (0, 2):
        extra = (
            "data.pipeline=tensor",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"data.num_workers={workers}",
            "data.pad=2",
            "data.erasing_prob=0.5",
            "eval.trials=1",
        )
        out = train(load_config(None, tiny_config(tmp_path, f"w{workers}", *extra)), progress=False)
        weights.append(out["model"].state_dict())
    assert len(list((tmp_path / "cache").glob("train-32x16-*.npy"))) == 1
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
