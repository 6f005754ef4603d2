"""Processes and devices: joining the ``torchrun`` process group, the device and autocast.

Everything that differs between one CPU process, one GPU and several GPUs or nodes lives here,
so the training loop itself stays device-agnostic. The order matters and :func:`setup_process`
keeps it:

1. read what ``torchrun`` put in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
   ``LOCAL_WORLD_SIZE``) — :func:`launch_info`;
2. resolve the device from ``train.device`` (``auto`` = ``cuda:LOCAL_RANK`` when CUDA is present,
   else the CPU) — :func:`resolve_device`;
3. pin the process to its GPU (``torch.cuda.set_device``) before anything touches CUDA, so
   pinned-memory threads, NCCL and ``barrier()`` never all land on GPU 0;
4. join the process group with the backend that fits the device: NCCL for CUDA, gloo for the
   CPU (:func:`backend_for`).

Example::

    dist_info, device = setup_process(cfg.train.device)
    model = build_model(...).to(device)
    train_model = wrap_ddp(model, dist_info, device, sync_bn=cfg.train.sync_bn)
    ...
    teardown_process()
"""

from __future__ import annotations

import os
import platform
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from csetgraph.config import AMP_MODES
from csetgraph.errors import ConfigError

# The process-group backend for each device type; anything else cannot train under torchrun.
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: 1 process unless launched by ``torchrun``."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int | None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ConfigError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {name} is not: launch "
                f"distributed training with torchrun, which sets both for every process"
            )
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={value!r} is not an integer: unset it, or launch "
            f"with torchrun, which sets it"
        ) from None


def launch_info() -> DistInfo:
    """Where ``torchrun`` placed this process, read from the environment it sets.

    Without ``torchrun`` (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) this is one process, rank 0.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(
        world_size=world,
        rank=_env_int("RANK", None),
        local_rank=_env_int("LOCAL_RANK", None),
        # Unknown per-node count: assume all processes share this node, the cautious reading.
        local_world_size=_env_int("LOCAL_WORLD_SIZE", world),
    )


def _parse_device(name: str, option: str) -> torch.device:
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{option}={name!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None


def _check_gpu_index(device: torch.device, dist_info: DistInfo, option: str) -> None:
    """A GPU index this machine has and, under torchrun, that belongs to this process alone."""
    count = torch.cuda.device_count()
    if device.index >= count:
        if dist_info.world_size > 1 and device.index == dist_info.local_rank:
            raise ConfigError(
                f"torchrun started a process with LOCAL_RANK={dist_info.local_rank} but this "
                f"node has {count} visible GPU(s), so it has no GPU of its own: start at most "
                f"{count} process(es) per node (--nproc-per-node {count}), or train on the CPU "
                f"with {option}=cpu"
            )
        raise ConfigError(
            f"{option}={device} but this machine has {count} visible GPU(s) "
            f"(cuda:0 to cuda:{count - 1}): pick one of those, or use {option}=cuda"
        )


def resolve_device(
    name: str, dist_info: DistInfo | None = None, *, option: str = "train.device"
) -> torch.device:
    """The device this process computes on.

    ``auto`` picks CUDA when present, else the CPU. A CUDA device without an index becomes
    ``cuda:LOCAL_RANK`` (``cuda:0`` in a single process), so every process under ``torchrun``
    owns one GPU. An explicit ``cuda:N`` is refused when several processes share a node, since
    they would all compute on the same GPU.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or any other torch device string.
        dist_info: this process's place in the job (:func:`launch_info`); ``None`` = one process.
        option: the setting ``name`` came from, named in error messages.

    Raises:
        ConfigError: an unknown device, CUDA asked for but absent, an index beyond the GPUs
            present, or a ``torchrun`` rank without a GPU of its own.
    """
    dist_info = dist_info or DistInfo()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = _parse_device(name, option)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{option}={name} but CUDA is not available (no GPU, or a CPU-only build of "
            f"torch): use {option}=cpu, or {option}=auto to use a GPU only when there is one"
        )
    if device.index is None:
        device = torch.device("cuda", dist_info.local_rank)
    elif dist_info.local_world_size > 1:
        raise ConfigError(
            f"{option}={name} under torchrun with {dist_info.local_world_size} processes on "
            f"this node would put them all on one GPU: use {option}=cuda or auto (each "
            f"process takes cuda:LOCAL_RANK), and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    _check_gpu_index(device, dist_info, option)
    return device


def describe_device(device: torch.device) -> str:
    """What a timing ran on, for logs and benchmarks: ``"cuda:0 (NVIDIA H100 ...)"`` or
    ``"cpu (AMD EPYC, AVX2, 2 threads)"`` (the CPU's model name, the vector instructions
    torch's kernels use, and torch's intra-op threads)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        return str(device)
    threads = torch.get_num_threads()
    isa = torch.backends.cpu.get_cpu_capability()
    return f"cpu ({cpu_model()}, {isa}, {threads} thread{'s' if threads != 1 else ''})"


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name: the ``model name`` line of Linux's ``cpuinfo``, else
    :func:`platform.processor`, else ``"unknown CPU"``."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def backend_for(device: torch.device) -> str:
    """The process-group backend for ``device``: NCCL for CUDA, gloo for the CPU."""
    try:
        return BACKENDS[device.type]
    except KeyError:
        raise ConfigError(
            f"distributed training runs on cuda (NCCL) or cpu (gloo), not {device.type}: "
            f"set train.device=auto, cuda or cpu"
        ) from None


def _join_group(dist_info: DistInfo, device: torch.device) -> DistInfo:
    """Join the default process group (once) and return this process's rank in it."""
    import torch.distributed as dist

    if not dist.is_initialized():
        # ``device_id`` binds the group to this process's GPU: NCCL connects eagerly and
        # ``barrier()`` knows which GPU to use instead of guessing GPU 0.
        device_id = device if device.type == "cuda" else None
        dist.init_process_group(backend=backend_for(device), device_id=device_id)
    return DistInfo(
        dist_info.world_size, dist.get_rank(), dist_info.local_rank, dist_info.local_world_size
    )


def setup_process(device_name: str) -> tuple[DistInfo, torch.device]:
    """Resolve the device, pin it, then join the process group with the backend that fits.

    In a single process no group is created. Under ``torchrun`` on CUDA each process is pinned
    to ``cuda:LOCAL_RANK`` before anything touches CUDA and the group uses NCCL; on the CPU the
    group uses gloo.

    Returns:
        ``(dist_info, device)``: the rank, world size and local rank, and the device.
    """
    dist_info = launch_info()
    device = resolve_device(device_name, dist_info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist_info.world_size > 1:
        dist_info = _join_group(dist_info, device)
    return dist_info, device


def teardown_process() -> None:
    """Leave the process group, if this process joined one (call once training ends)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(
    model: torch.nn.Module, dist_info: DistInfo, device: torch.device, *, sync_bn: bool = False
) -> torch.nn.Module:
    """The module to train: ``model`` itself in one process, else DDP around it.

    With ``sync_bn`` (several CUDA processes) every BatchNorm layer becomes a SyncBatchNorm, which
    normalises with the statistics of the global batch instead of each process's share. The
    conversion happens inside ``model`` (its BatchNorm children are replaced) and the new layers
    share the old parameters and running statistics, so an optimiser built on ``model``
    beforehand and ``model.state_dict()`` keep working. In a single process ``sync_bn`` changes
    nothing: the one batch is already the global batch.

    Raises:
        ConfigError: ``sync_bn`` with several CPU processes (SyncBatchNorm needs a GPU).
    """
    if dist_info.world_size <= 1:
        return model
    if sync_bn:
        if device.type == "cpu":
            raise ConfigError(
                "train.sync_bn=true needs GPUs (SyncBatchNorm does not run on the CPU): "
                "set train.sync_bn=false for distributed training on the CPU"
            )
        # A new module only when ``model`` itself is a BatchNorm layer; it still shares tensors.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def autocast_context(
    amp: str, device: torch.device
) -> tuple[AbstractContextManager, torch.amp.GradScaler | None]:
    """The autocast context for the forward pass and loss, and a GradScaler when fp16 needs one.

    ``train.amp`` values:

    * ``auto``: bf16 on a GPU that computes bf16 natively (compute capability 8.0 or newer:
      A100, H100, RTX 30xx/40xx, L4, ...); off (fp32) on older GPUs, where bf16 would be
      emulated and slow, and on the CPU, where autocast rarely speeds up training;
    * ``bf16``: bf16 autocast on any device (CPU autocast supports it); no loss scaling, since
      bf16 has fp32's exponent range;
    * ``fp16``: fp16 autocast with a ``GradScaler`` that scales the loss so small gradients do
      not flush to zero; the caller steps the optimiser through the scaler;
    * ``off``: fp32 throughout.

    Returns:
        ``(context, scaler)``: a context manager to wrap forward + loss in, and the scaler
        (``None`` unless ``fp16``).
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "auto":
        native_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
        amp = "bf16" if native_bf16 else "off"
    if amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler
