"""Training state (resumable checkpoints): atomic writes, ``weights_only`` reads, random states.

A checkpoint is written through :func:`csetgraph.files.atomic_path` (a temporary file in the
same folder, flushed to disk, then renamed over the old one), so a crash while writing leaves
the previous checkpoint intact. Reads use ``torch.load(weights_only=True)``: no
arbitrary pickle is ever executed.

Every checkpoint carries ``version`` (:data:`CHECKPOINT_VERSION`); a file from a newer csetgraph
is refused with a message rather than misread. ``best.pt`` keeps only the model weights, so it
can be evaluated but not resumed: resuming needs the optimiser, scheduler and random state of
``last.pt`` (:func:`check_resumable_checkpoint` says so).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csetgraph.files import atomic_path
from csetgraph.models.checkpoint import CheckpointError

#: 1: the first format; 2: two optimiser parameter groups (decay / no decay) and "scaler".
CHECKPOINT_VERSION = 2
#: What a checkpoint needs to resume training (``best.pt`` has only the weights).
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "rng", "config")
#: The key of the weight average (``train.ema_decay`` > 0), when a run keeps one.
AVERAGE_KEY = "ema"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) random states, as weights_only-safe values."""
    py = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - third-party code may use the legacy global RNG
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # Only this process's own GPU (set_device pinned it): a checkpoint from a machine with
        # more GPUs must resume on one with fewer, and each DDP rank keeps its own stream.
        state["cuda_device"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if not torch.cuda.is_available():
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"])
    elif "cuda" in state:  # older checkpoints held every visible GPU's state
        index = torch.cuda.current_device()
        if index < len(state["cuda"]):
            torch.cuda.set_rng_state(state["cuda"][index])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (a file, or a run folder whose ``last.pt`` is used)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {str(path)!r}; pass a run folder (with checkpoints/last.pt) "
            "or a checkpoint file"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a csetgraph checkpoint "
            f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); "
            "use another checkpoint (the run folder keeps last.pt and best.pt)"
        ) from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{str(path)!r} is not a csetgraph training checkpoint")
    check_version(ckpt, path)
    return ckpt


def check_version(ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint written by a newer (or unknown) format; files without one are v1."""
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has an unknown format version {version!r}; "
            "it was not written by csetgraph"
        )
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version}, newer than this csetgraph "
            f"reads (up to {CHECKPOINT_VERSION}); upgrade csetgraph to use it"
        )


def check_resumable_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from a file that lacks the training state (e.g. ``best.pt``)."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} holds model weights only (no {', '.join(missing)}), so training "
            "cannot continue from it; resume from the run folder (train.resume=<run folder>, "
            "which uses checkpoints/last.pt), or evaluate this file with csetgraph evaluate"
        )
    if ckpt.get("version", 1) < 2:
        raise CheckpointError(
            f"{str(path)!r} was written by an older csetgraph (checkpoint version "
            f"{ckpt.get('version', 1)}, one optimiser parameter group); it can be evaluated, "
            "but training cannot resume from it: start a new run"
        )


def retrieval_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint retrieves with: the moving average of the training weights when
    the run kept one (``train.ema_decay`` > 0, :data:`AVERAGE_KEY`), else the training weights."""
    return ckpt.get(AVERAGE_KEY, ckpt["model"])


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a state dict strictly, turning mismatches into one readable error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"{len(shape)} with other shapes (e.g. {'; '.join(shape[:3])})")
        hint = "Use the config the checkpoint was trained with (its run folder has config.yaml)."
        if any(k.startswith("tri_heads.") for k in missing + unexpected):
            hint += " A run from before model.triplet.head_form existed needs head_form=plain."
        raise CheckpointError(
            f"{origin} was made for another model configuration: {'; '.join(parts)}. {hint}"
        )
    model.load_state_dict(state)
