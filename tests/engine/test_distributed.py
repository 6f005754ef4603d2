"""DDP with two CPU processes (gloo, launched by torchrun) against a single process.

How the test handles batch-dependent terms: under DDP each process normalises its BatchNorm
layers with the statistics of its own share of the batch, and mines its batch-hard triplets
within that share; gradients are then averaged across processes. The single-process reference
below reproduces exactly that computation without any process group: it takes the same
global batch, splits it into the same two shares (the sampler's ``rank`` slices), computes
each share's loss on its own and back-propagates their mean. What remains is floating-point
summation order (all-reduce versus autograd accumulation), amplified slightly by Adam's
normalisation over a few steps, hence the 1e-4 tolerance on the final parameters (buffers,
i.e. BatchNorm running statistics, are not compared: DDP keeps rank 0's).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from csetgraph.config import load_config
from csetgraph.data.build import build_train_data
from csetgraph.data.torch_datasets import PairedDataset
from csetgraph.data.transforms import build_train_transform
from csetgraph.engine.trainer import build_sampler
from csetgraph.losses import build_criterion
from csetgraph.models import build_model

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


def overrides(tiny_config, out_dir):
    """The shared tiny config (tests/conftest.py) without randomness the reference cannot copy."""
    return tiny_config(
        out_dir,
        "ddp",
        "data.flip_prob=0",
        "data.pad=0",
        "data.erasing_prob=0",
        "data.grayscale_prob=0",  # the reference below builds its transform without it
        # The reference below builds its batches with the PIL transforms: the same path here.
        "data.pipeline=pil",
        "model.drop_path_rate=0",
        "model.dropout=0",
        f"train.max_steps_per_epoch={STEPS}",
        "train.warmup_epochs=0",  # the reference below steps Adam at a constant rate
        # Pinned (also in the tiny config): under "auto" a GPU machine would run on NCCL.
        "train.device=cpu",
        "eval.trials=1",
        "eval.modes=[all]",
    )


def sharded_reference(cfg, world_size=2):
    torch.manual_seed(cfg.train.seed)
    data = build_train_data(cfg.data)
    model = build_model(cfg.model, data.num_classes, (cfg.data.height, cfg.data.width))
    mean, std = model.vis_encoder.mean_std
    tf = build_train_transform(
        cfg.data.height, cfg.data.width, mean=mean, std=std, pad=0, flip_prob=0, erasing_prob=0
    )
    dataset = PairedDataset(data.vis, data.ir, tf)
    loaders = []
    for rank in range(world_size):
        sampler = build_sampler(data, cfg, world_size=world_size, rank=rank)
        loaders.append(DataLoader(dataset, batch_sampler=sampler))
    criterion = build_criterion(cfg.loss)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    model.train()
    for shares in zip(*loaders, strict=True):
        losses = []
        for vis, ir, vis_pid, ir_pid in shares:
            loss, _ = criterion(model(vis, ir), torch.cat([vis_pid, ir_pid]))
            losses.append(loss)
        opt.zero_grad()
        (sum(losses) / world_size).backward()
        opt.step()
    return model.state_dict(), {n for n, _ in model.named_parameters()}


@pytest.mark.slow
def test_two_process_ddp_matches_the_sharded_single_process_computation(tiny_config, tmp_path):
    args = overrides(tiny_config, tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(ROOT / "scripts" / "train.py"), "--no-progress", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in (tmp_path / "ddp" / "log.txt").read_text()
    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)["model"]

    torch.set_num_threads(1)
    ref, params = sharded_reference(load_config(None, args))
    moved = 0
    for name in params:
        torch.testing.assert_close(ddp[name], ref[name], rtol=1e-4, atol=1e-4, msg=name)
        moved += 1
    assert moved > 50
