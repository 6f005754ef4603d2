"""Device, backend and DDP choices under torchrun environments, with CUDA and the group mocked.

This machine has no GPU and the tests start no process group: ``torch.cuda`` and
``torch.distributed`` are replaced by fakes that record what :mod:`csetgraph.engine.distributed`
asks of them, and the environment is set as ``torchrun`` sets it. Each case states the expected
device, backend and call order by hand, from the launch it describes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from csetgraph.config import load_config
from csetgraph.engine import distributed
from csetgraph.engine.distributed import (
    DistInfo,
    autocast_context,
    resolve_device,
    setup_process,
    wrap_ddp,
)
from csetgraph.errors import ConfigError
from csetgraph.models import build_model

# 32 patches of 16x16: enough for the default token-exchange ratio to exchange some.
IMG_SIZE = (128, 64)
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class FakeMachine:
    """``n_gpus`` fake GPUs and a fake default process group; ``calls`` keeps the order."""

    def __init__(self, monkeypatch, n_gpus: int, native_bf16: bool = True):
        self.calls: list[tuple] = []
        self.group: dict | None = None
        cuda, dist = torch.cuda, torch.distributed
        monkeypatch.setattr(cuda, "is_available", lambda: n_gpus > 0)
        monkeypatch.setattr(cuda, "device_count", lambda: n_gpus)
        monkeypatch.setattr(cuda, "set_device", lambda d: self.calls.append(("set_device", d)))
        monkeypatch.setattr(cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
        monkeypatch.setattr(dist, "is_initialized", lambda: self.group is not None)
        monkeypatch.setattr(dist, "init_process_group", self._init)
        monkeypatch.setattr(dist, "get_rank", lambda: self.group["rank"])

    def _init(self, backend=None, device_id=None, **kwargs):
        assert self.group is None, "the process group was initialised twice"
        # env:// initialisation, as torchrun launches it, takes the rank from RANK.
        import os

        self.group = {"backend": backend, "device_id": device_id, "rank": int(os.environ["RANK"])}
        self.calls.append(("init_process_group", backend, device_id))


@pytest.fixture
def launch(monkeypatch):
    """Set the torchrun environment: ``launch(world, rank, local_rank, local_world)``."""
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)

    def set_env(world, rank, local_rank, local_world):
        for var, value in zip(TORCHRUN_VARS, (world, rank, local_rank, local_world), strict=True):
            monkeypatch.setenv(var, str(value))

    return set_env


@pytest.fixture
def machine(monkeypatch):
    return lambda n_gpus, **kw: FakeMachine(monkeypatch, n_gpus, **kw)


TWO_GPU_CASES = [(rank, name) for rank in (0, 1) for name in ("auto", "cuda")]


@pytest.mark.parametrize(("rank", "name"), TWO_GPU_CASES)
def test_two_processes_on_two_gpus_pin_their_own_gpu_then_join_nccl(launch, machine, rank, name):
    assert TWO_GPU_CASES
    m = machine(2)
    launch(world=2, rank=rank, local_rank=rank, local_world=2)
    info, device = setup_process(name)
    gpu = torch.device("cuda", rank)
    assert device == gpu
    assert info == DistInfo(world_size=2, rank=rank, local_rank=rank, local_world_size=2)
    # Pinned before the group exists, so NCCL's set-up already runs on this process's GPU.
    assert m.calls == [("set_device", gpu), ("init_process_group", "nccl", gpu)]
    assert info.is_main == (rank == 0)


def test_several_nodes_use_the_local_rank_for_the_gpu_and_the_global_rank_for_the_group(
    launch, machine
):
    m = machine(2)
    launch(world=4, rank=3, local_rank=1, local_world=2)  # node 1 of 2, its second process
    info, device = setup_process("auto")
    assert device == torch.device("cuda", 1)
    assert (info.rank, info.local_rank, info.world_size) == (3, 1, 4)
    assert not info.is_main
    assert m.calls == [("set_device", device), ("init_process_group", "nccl", device)]


def test_cpu_only_machine_under_torchrun_uses_gloo_and_never_touches_cuda(launch, machine):
    m = machine(0)
    launch(world=2, rank=1, local_rank=1, local_world=2)
    info, device = setup_process("auto")
    assert device == torch.device("cpu")
    assert info.rank == 1
    assert m.calls == [("init_process_group", "gloo", None)]


def test_device_cpu_on_a_gpu_machine_uses_gloo(launch, machine):
    m = machine(2)
    launch(world=2, rank=0, local_rank=0, local_world=2)
    _, device = setup_process("cpu")
    assert device == torch.device("cpu")
    assert m.calls == [("init_process_group", "gloo", None)]


def test_a_rank_without_a_gpu_of_its_own_is_refused_before_any_set_up(launch, machine):
    m = machine(2)
    launch(world=3, rank=2, local_rank=2, local_world=3)  # --nproc-per-node 3 on 2 GPUs
    with pytest.raises(ConfigError, match=r"LOCAL_RANK=2.*--nproc-per-node 2"):
        setup_process("auto")
    assert m.calls == []


def test_explicit_gpu_in_one_process_is_used_as_given(launch, machine):
    m = machine(2)
    info, device = setup_process("cuda:1")
    assert device == torch.device("cuda", 1)
    assert info == DistInfo()
    assert m.calls == [("set_device", device)]  # one process: no group


def test_explicit_gpu_is_refused_when_several_processes_share_the_node(launch, machine):
    machine(2)
    launch(world=2, rank=0, local_rank=0, local_world=2)
    with pytest.raises(ConfigError, match="all on one GPU"):
        setup_process("cuda:1")


def test_explicit_gpu_with_one_process_per_node_is_used(launch, machine):
    m = machine(2)
    launch(world=2, rank=1, local_rank=0, local_world=1)
    _, device = setup_process("cuda:1")
    assert device == torch.device("cuda", 1)
    assert m.calls == [("set_device", device), ("init_process_group", "nccl", device)]


def test_one_process_takes_the_first_gpu_or_the_cpu(launch, machine):
    machine(1)
    assert setup_process("auto") == (DistInfo(), torch.device("cuda", 0))
    machine(0)
    assert setup_process("auto") == (DistInfo(), torch.device("cpu"))


def test_an_existing_process_group_is_joined_not_created_again(launch, machine):
    m = machine(0)
    launch(world=2, rank=1, local_rank=1, local_world=2)
    m.group = {"backend": "gloo", "device_id": None, "rank": 1}
    info, _ = setup_process("cpu")
    assert info.rank == 1
    assert m.calls == []


@pytest.mark.parametrize(
    ("name", "n_gpus", "message"),
    [
        ("cuda", 0, "CUDA is not available"),
        ("cuda:3", 2, "2 visible GPU"),
        ("gpu", 1, "is not a device"),
    ],
)
def test_unusable_devices_are_config_errors(launch, machine, name, n_gpus, message):
    machine(n_gpus)
    with pytest.raises(ConfigError, match=message):
        resolve_device(name)


def test_torchrun_environment_without_local_rank_is_refused(launch, machine, monkeypatch):
    machine(0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="LOCAL_RANK is not"):
        setup_process("cpu")


# --- SyncBatchNorm and DDP wrapping --------------------------------------------------------


class RecordingDDP(nn.Module):
    """Stands in for DistributedDataParallel, which needs a live process group."""

    def __init__(self, module, device_ids=None):
        super().__init__()
        self.module, self.device_ids = module, device_ids


def tiny_model() -> nn.Module:
    overrides = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.mhga.heads=2"]
    cfg = load_config(None, [*overrides, "model.ca.heads=2", "model.se.layers=[0]"])
    cfg.model.pretrained = ""
    torch.manual_seed(0)
    return build_model(cfg.model, 4, IMG_SIZE)


def batchnorms(model: nn.Module) -> dict[str, nn.Module]:
    return {
        n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


def test_sync_bn_in_one_process_leaves_the_model_alone(monkeypatch):
    def no_ddp(*args, **kwargs):
        raise AssertionError("DDP in a single process")

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", no_ddp)
    model = tiny_model()
    before = {n: type(m) for n, m in batchnorms(model).items()}
    assert wrap_ddp(model, DistInfo(), torch.device("cpu"), sync_bn=True) is model
    assert before and {n: type(m) for n, m in batchnorms(model).items()} == before
    assert nn.SyncBatchNorm not in before.values()


def test_sync_bn_under_ddp_converts_every_batchnorm_and_keeps_its_tensors(monkeypatch):
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordingDDP)
    model = tiny_model().eval()
    old = batchnorms(model)
    params_before = list(model.parameters())
    stats_before = {n: (m.running_mean, m.running_var) for n, m in old.items()}
    x = torch.randn(2, 3, *IMG_SIZE)
    with torch.no_grad():
        expected = model.embed(x, "vis")

    info = DistInfo(world_size=2, rank=1, local_rank=1, local_world_size=2)
    wrapped = wrap_ddp(model, info, torch.device("cuda", 1), sync_bn=True)
    assert isinstance(wrapped, RecordingDDP) and wrapped.module is model
    assert wrapped.device_ids == [1]
    new = batchnorms(model)
    assert new.keys() == old.keys() and len(new) > 0
    assert all(type(m) is nn.SyncBatchNorm for m in new.values())
    # The optimiser built before wrapping still holds the model's parameters.
    assert all(a is b for a, b in zip(params_before, model.parameters(), strict=True))
    for name, m in new.items():
        assert m.running_mean is stats_before[name][0] and m.running_var is stats_before[name][1]
    with torch.no_grad():  # eval mode: SyncBatchNorm uses the same running statistics
        torch.testing.assert_close(model.embed(x, "vis"), expected)


def test_sync_bn_with_several_cpu_processes_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordingDDP)
    info = DistInfo(world_size=2, rank=0, local_rank=0, local_world_size=2)
    with pytest.raises(ConfigError, match="sync_bn"):
        wrap_ddp(nn.Sequential(nn.BatchNorm1d(4)), info, torch.device("cpu"), sync_bn=True)
    plain = wrap_ddp(nn.Sequential(nn.BatchNorm1d(4)), info, torch.device("cpu"))
    assert plain.device_ids is None and type(plain.module[0]) is nn.BatchNorm1d


# --- autocast -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amp", "dtype", "scaled"),
    [
        ("auto", torch.float32, False),
        ("off", torch.float32, False),
        ("bf16", torch.bfloat16, False),
        ("fp16", torch.float16, True),
    ],
)
def test_cpu_autocast_computes_in_the_asked_precision(amp, dtype, scaled):
    ctx, scaler = autocast_context(amp, torch.device("cpu"))
    a = torch.randn(4, 4)
    with ctx:
        assert (a @ a).dtype == dtype
    assert (scaler is not None) == scaled
    if scaled:
        assert isinstance(scaler, torch.amp.GradScaler)


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_cuda_is_bf16_only_where_the_gpu_has_it(machine, native_bf16, expected):
    machine(1, native_bf16=native_bf16)
    ctx, scaler = autocast_context("auto", torch.device("cuda", 0))
    assert scaler is None
    if expected is None:
        assert not isinstance(ctx, torch.autocast)
    else:
        assert isinstance(ctx, torch.autocast)
        assert (ctx.device, ctx.fast_dtype) == ("cuda", expected)


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.amp"):
        autocast_context("fp8", torch.device("cpu"))


def test_distributed_training_on_another_device_type_is_a_config_error():
    with pytest.raises(ConfigError, match="cuda \\(NCCL\\) or cpu \\(gloo\\)"):
        distributed.backend_for(torch.device("meta"))


# ---------------------------------------------------------------------- describing the device


def test_cpu_model_reads_the_model_name_line(tmp_path):
    # Two processors, as Linux lists them; the first "model name" line is the answer.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
    )
    assert distributed.cpu_model(cpuinfo) == "AMD EPYC 7B13"


@pytest.mark.parametrize("content", [None, "processor\t: 0\nBogoMIPS\t: 50.00\n"])
def test_cpu_model_falls_back_to_platform(tmp_path, monkeypatch, content):
    # No cpuinfo file (macOS, Windows), or one without a model name (some ARM kernels).
    cpuinfo = tmp_path / "cpuinfo"
    if content is not None:
        cpuinfo.write_text(content)
    monkeypatch.setattr(distributed.platform, "processor", lambda: "arm")
    assert distributed.cpu_model(cpuinfo) == "arm"
    monkeypatch.setattr(distributed.platform, "processor", lambda: "")
    assert distributed.cpu_model(cpuinfo) == "unknown CPU"


def test_describe_device_names_the_cpu_its_instructions_and_threads(monkeypatch):
    monkeypatch.setattr(distributed, "cpu_model", lambda: "Test CPU")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert (
            distributed.describe_device(torch.device("cpu")) == "cpu (Test CPU, AVX512, 1 thread)"
        )
        torch.set_num_threads(2)
        assert (
            distributed.describe_device(torch.device("cpu")) == "cpu (Test CPU, AVX512, 2 threads)"
        )
    finally:
        torch.set_num_threads(threads)


def test_describe_device_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Fake GPU {device}")
    assert distributed.describe_device(torch.device("cuda:1")) == "cuda:1 (Fake GPU cuda:1)"
