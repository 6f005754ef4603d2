"""Device choice and the process group on a real GPU: ``auto`` is ``cuda:0``, NCCL comes up in
one process, and DDP with SyncBatchNorm steps as the bare model does."""

from __future__ import annotations

import socket

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine.distributed import (
    DistInfo,
    _join_group,
    resolve_device,
    setup_process,
    teardown_process,
    wrap_ddp,
)
from csetgraph.losses import build_criterion
from csetgraph.models import build_model

pytestmark = pytest.mark.cuda

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def test_auto_and_cuda_resolve_to_the_first_gpu_which_setup_pins(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    info, device = setup_process("auto")
    assert device == torch.device("cuda", 0)
    assert info == DistInfo()  # one process: no group
    assert torch.cuda.current_device() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_group_in_one_process_and_ddp_with_syncbn_steps_as_the_bare_model(
    monkeypatch, cuda, tiny_overrides
):
    import torch.distributed as dist

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env |= {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(None, tiny_overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, 4, (cfg.data.height, cfg.data.width)).to(cuda).train()
    bare = build_model(cfg.model, 4, (cfg.data.height, cfg.data.width)).to(cuda).train()
    bare.load_state_dict(model.state_dict())
    try:
        info = _join_group(DistInfo(), cuda)
        assert dist.get_backend() == "nccl"
        assert (info.rank, dist.get_world_size()) == (0, 1)
        x = torch.arange(4.0, device=cuda)
        dist.all_reduce(x)  # one process: the sum is the tensor itself
        assert torch.equal(x, torch.arange(4.0, device=cuda))
        dist.barrier()
        # wrap_ddp wraps only for several processes: tell it two, the group has one, so DDP
        # and SyncBatchNorm reduce over that one rank.
        wrapped = wrap_ddp(model, DistInfo(world_size=2), cuda, sync_bn=True)
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in bare.modules())
        criterion = build_criterion(cfg.loss)
        g = torch.Generator().manual_seed(1)
        size = (cfg.data.height, cfg.data.width)
        vis, ir = (torch.randn(4, 3, *size, generator=g).to(cuda) for _ in range(2))
        pids = torch.tensor([0, 0, 1, 1] * 2, device=cuda)
        for net in (wrapped, bare):
            torch.manual_seed(2)  # the same dropout draws
            loss, _ = criterion(net(vis, ir), pids)
            loss.backward()
        torch.cuda.synchronize()
    finally:
        teardown_process()
    assert not dist.is_initialized()
    compared = 0
    for (name, p), q in zip(model.named_parameters(), bare.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
        compared += 1
    assert compared > 10
