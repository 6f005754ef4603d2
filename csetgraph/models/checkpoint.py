"""Loading pretrained ViT weights: a pure checkpoint filter and the loader around it.

``model.pretrained`` is either a timm name (timm downloads the weights, on a machine that can)
or the path of a local checkpoint: ``.safetensors``, or a torch file read with
``weights_only=True`` (never an arbitrary pickle). Positional embeddings are resampled to the
model's patch grid and the patch projection to its kernel, as timm does for its own models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from csetgraph.errors import CheckpointError

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state")
_PREFIXES = ("module.", "model.", "backbone.", "base.", "encoder.", "vit.")
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.", "pre_logits.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` or torch file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files raise many different errors
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors")
    return dict(state)


def filter_vit_checkpoint(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Adapt a ViT state dict to ``model`` (a timm ``VisionTransformer``); pure, no I/O.

    Strips wrapper prefixes (``module.``, ``backbone.`` …), drops classifier heads, resamples
    ``pos_embed`` to the model's patch grid (bicubic, class token kept) and the patch
    projection kernel to the model's patch size.
    """
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix) and key[len(prefix) :] in target:
                key = key[len(prefix) :]
                break
        if key.startswith(_HEAD_PREFIXES):
            continue
        if key == "pos_embed" and key in target and value.shape != target[key].shape:
            prefix_tokens = (
                0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            )
            n_old = value.shape[1] - prefix_tokens
            old_grid = _guess_grid(n_old, getattr(model.patch_embed, "grid_size", None))
            value = resample_abs_pos_embed(
                value,
                new_size=list(model.patch_embed.grid_size),
                old_size=list(old_grid),
                num_prefix_tokens=prefix_tokens,
            )
        elif key == "patch_embed.proj.weight" and key in target:
            if value.shape[-2:] != target[key].shape[-2:]:
                value = resample_patch_embed(value, list(target[key].shape[-2:]))
        out[key] = value
    return out


def _guess_grid(n: int, new_grid) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side == n:
        return side, side
    if new_grid is not None and new_grid[0] * new_grid[1] == n:
        return tuple(new_grid)
    if new_grid is not None:  # a person-shaped grid (e.g. 8x4) resized to another of its shape
        h, w = new_grid
        side = math.isqrt(n * w // h) if n * w % h == 0 else 0
        if side and side * h % w == 0 and (side * h // w) * side == n:
            return side * h // w, side
    raise CheckpointError(
        f"cannot infer the patch grid of a positional embedding with {n} patch tokens"
    )


@dataclass(frozen=True)
class PretrainedReport:
    """How a pretrained file matched an encoder: what :func:`load_pretrained` returns and logs.

    Attributes:
        origin: the file or timm name the weights came from.
        total: tensors in the encoder's state dict.
        matched: encoder tensors filled from the file.
        missing: encoder tensors the file lacks (they keep their random initialisation).
        unexpected: tensors of the file the encoder has no place for (heads excluded).
    """

    origin: str
    total: int
    matched: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"pretrained {self.origin}: {self.matched} of {self.total} encoder tensors matched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected"
        )


#: The checkout this package sits in: relative ``model.pretrained`` paths that do not exist
#: from the working folder are looked up here, so the shipped ``weights/`` file loads
#: whichever folder a command runs from.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_weights_path(source: str) -> Path:
    """``source`` as a path: as given, else relative to the project checkout if it is there."""
    path = Path(source).expanduser()
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def _read_source(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a local file or of a timm model name, and a description of it."""
    path = resolve_weights_path(source)
    if path.exists() or "/" in source or source.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return read_state_dict(path), f"checkpoint {str(path)!r}"
    import timm

    try:
        ref = timm.create_model(source, pretrained=True, num_classes=0)
    except Exception as err:
        raise CheckpointError(
            f"cannot load pretrained weights {source!r}: not a local file, and timm could "
            f"not fetch them ({err}). Pass a local checkpoint path instead."
        ) from err
    return ref.state_dict(), f"timm weights {source!r}"


def load_pretrained(model: nn.Module, source: str) -> PretrainedReport:
    """Load pretrained weights into a timm ViT from a local file or a timm name.

    Args:
        model: the timm ``VisionTransformer`` to fill.
        source: a checkpoint path, or a timm model name whose weights timm downloads.

    Returns:
        The matched, missing and unexpected counts (also logged at INFO).

    Raises:
        CheckpointError: unreadable file, unknown name, weights that do not fit (a different
        width or depth: the message lists the offending keys), or fewer than half of the
        encoder's tensors matched (the message names some of the missing ones).
    """
    state, origin = _read_source(source)
    state = filter_vit_checkpoint(state, model)
    target = model.state_dict()
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if bad:
        raise CheckpointError(
            f"{origin} does not fit the model (a different width, depth or patch size?): "
            + "; ".join(bad[:5])
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    matched = sum(k in target for k in state)
    if matched < len(target) / 2:
        missing = [k for k in target if k not in state]
        raise CheckpointError(
            f"{origin} matches only {matched} of the encoder's {len(target)} tensors, so it is "
            f"not a checkpoint of model.backbone; missing e.g. {', '.join(missing[:5])}. Pass "
            "weights of the same architecture (timm key layout) in model.pretrained"
        )
    result = model.load_state_dict(state, strict=False)
    report = PretrainedReport(
        origin, len(target), matched, tuple(result.missing_keys), tuple(result.unexpected_keys)
    )
    log.info("%s", report)
    return report
