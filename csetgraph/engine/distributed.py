"""Processes and devices: joining the ``torchrun`` process group, the device and autocast.

Everything that differs between one CPU process, one GPU and several GPUs or nodes lives here,
so the training loop itself stays device-agnostic.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    """``auto`` picks CUDA when present (one GPU per process under torchrun), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and dist_info is not None:
        device = torch.device("cuda", dist_info.local_rank)
    return device


def autocast_context(amp: str, device: torch.device):
    """bf16/fp16 autocast on CUDA (``auto`` = bf16); off on the CPU unless asked for."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    if amp == "off":
        return nullcontext(), None
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"train.amp must be auto, off, bf16 or fp16, got {amp!r}")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


def setup_process(device_name: str) -> tuple[DistInfo, torch.device]:
    """Resolve the device first, then join the process group with the backend that fits it.

    Under ``torchrun`` on CUDA each process is pinned to ``cuda:LOCAL_RANK`` before anything
    touches CUDA, and the group uses NCCL; on the CPU it uses gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, DistInfo(world, 0, local_rank) if world > 1 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return init_distributed(device.type), device


def wrap_ddp(
    model: torch.nn.Module, dist_info: DistInfo, device: torch.device, *, sync_bn: bool = False
) -> torch.nn.Module:
    """The module to train: ``model`` itself in one process, else DDP (optionally SyncBatchNorm)."""
    if dist_info.world_size <= 1:
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
