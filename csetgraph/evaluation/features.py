"""Embedding test images for evaluation: batched, on the model's device, optionally in AMP.

Evaluation embeds every test image once, so the loader and the copies matter on a GPU:

* the loader pins its batches in page-locked memory on CUDA, so the copy to the GPU is
  asynchronous (``non_blocking=True``) and overlaps with the previous batch's forward pass;
* features stay on the device: the batches are concatenated there and the distance matrix
  is built there (:func:`~csetgraph.evaluation.metrics.pairwise_distance`), and only the
  ranking copies rows to the CPU, one chunk at a time. A ``.cpu()`` per batch would wait
  for the GPU after every batch;
* ``eval.amp`` (:data:`csetgraph.config.AMP_MODES`) runs the forward pass under autocast: ``auto``
  means bf16 on a GPU that has it natively, fp16 on older GPUs (inference needs no loss
  scaling), and fp32 on the CPU, where autocast rarely pays. The features are returned in
  float32 whatever the autocast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from csetgraph.config import AMP_MODES
from csetgraph.data.records import Record
from csetgraph.data.torch_datasets import ImageDataset
from csetgraph.errors import ConfigError

__all__ = ["eval_autocast", "extract_features", "loader_options"]


def eval_autocast(amp: str, device: torch.device | str) -> AbstractContextManager:
    """A fresh autocast context for the evaluation's forward pass (see the module docstring)."""
    if amp not in AMP_MODES:
        raise ConfigError(f"eval.amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    device = torch.device(device)
    if amp == "auto":
        if device.type != "cuda":
            return nullcontext()
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        amp = "bf16" if native_bf16 else "fp16"
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def loader_options(device: torch.device | str, num_workers: int) -> dict:
    """DataLoader options: pinned memory for a CUDA device, workers kept for the whole pass."""
    device = torch.device(device)
    return dict(
        pin_memory=device.type == "cuda",
        num_workers=num_workers,
        # One pass over the images per call: persistent workers would only outlive it.
        persistent_workers=False,
    )


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    records: Sequence[Record],
    modality: str,
    *,
    transform: Callable,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
    amp: str = "auto",
) -> torch.Tensor:
    """Embed images of one modality with ``model.embed``, in eval mode.

    With ``flip`` the embedding of each image and of its mirror image are averaged and
    re-normalised (in float32).

    Args:
        model: a model with ``embed(images, modality) -> (B, D)``, already on ``device``.
        records: the images, in the order of the output rows.
        modality: ``"vis"`` or ``"ir"`` (the encoder to use).
        transform: PIL image -> ``(3, H, W)`` tensor.
        amp: autocast mode (:func:`eval_autocast`).

    Returns:
        float32 features on ``device`` (never copied back per batch).

    Shapes:
        output: ``(len(records), D)``; ``(0, 0)`` for no records.
    """
    device = torch.device(device)
    eval_autocast(amp, device)  # a wrong mode fails before any image is read
    was_training = model.training
    model.eval()
    loader = DataLoader(
        ImageDataset(records, transform),
        batch_size=batch_size,
        shuffle=False,
        **loader_options(device, num_workers),
    )
    out = []
    try:
        for images, *_ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)  # (B, 3, H, W)
            with eval_autocast(amp, device):
                feat = model.embed(images, modality).float()  # (B, D)
                if flip:
                    feat = feat + model.embed(torch.flip(images, dims=[3]), modality).float()
            if flip:
                feat = torch.nn.functional.normalize(feat, dim=1)
            out.append(feat)
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, 0, device=device)
    return torch.cat(out)  # (n, D) on device
