"""Load a trained model, its config and its test transform from a run folder or checkpoint.

Every figure starts from the same three things: the model (in eval mode, weights from the
checkpoint), the config it was trained with (for the data set, input size and protocol),
and the test transform the evaluation uses. :func:`load_run` gives the first two and
:func:`eval_transform` the third, so scripts and notebooks build them the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from csetgraph.config import Config, ConfigError, config_from_dict, load_config, parse_override
from csetgraph.data.transforms import build_test_transform
from csetgraph.engine.checkpoint import load_checkpoint, load_model_state
from csetgraph.models import CheckpointError, build_model
from csetgraph.models.cset import CSET

__all__ = ["eval_transform", "load_run", "run_folder"]


def run_folder(path: str | Path) -> Path:
    """The run folder of ``path``: a run folder itself, or ``<run>/checkpoints/<file>.pt``."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _config(path: str | Path, ckpt: dict, overrides: Sequence[str]) -> Config:
    saved = run_folder(path) / "config.yaml"
    if saved.is_file():
        return load_config(saved, overrides)
    if "config" not in ckpt:
        raise ConfigError(
            f"no config.yaml next to {str(path)!r} and no config stored in the checkpoint; "
            "pass the run folder the checkpoint was written to"
        )
    tree = json.loads(ckpt["config"])
    for text in overrides:
        key, value = parse_override(text)
        node = tree
        *sections, last = key.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        node[last] = value
    # config_from_dict checks every key and type against the schema.
    return config_from_dict(tree)


def load_run(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    device: torch.device | str = "cpu",
) -> tuple[CSET, Config]:
    """The trained model (eval mode, on ``device``) and its config.

    Args:
        path: a run folder (its ``checkpoints/last.pt`` is loaded) or a checkpoint file
            (``last.pt`` or ``best.pt``; the config is the run folder's ``config.yaml``, or
            the one stored in the checkpoint).
        overrides: dotted ``key=value`` overrides of the config, e.g. ``data.root=/data/SYSU``
            when the data set has moved since training.
        device: where to put the model.

    Raises:
        CheckpointError: no checkpoint there, or weights of another model configuration.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    cfg = _config(path, ckpt, overrides)
    # The checkpoint holds every weight: never look for the file training started from.
    cfg.model.pretrained = ""
    if "num_classes" in ckpt:
        num_classes = int(ckpt["num_classes"])
    else:  # best.pt keeps only weights: the classifier's rows are the training classes
        weight = ckpt["model"].get("neck.classifier.weight")
        if weight is None:
            raise CheckpointError(
                f"{str(path)!r} records no num_classes and has no neck.classifier.weight"
            )
        num_classes = int(weight.shape[0])
    model = build_model(cfg.model, num_classes, (cfg.data.height, cfg.data.width))
    load_model_state(model, ckpt["model"], f"checkpoint {str(path)!r}")
    return model.to(device).eval(), cfg


def eval_transform(model: CSET, cfg: Config):
    """The evaluation's transform: resize to the input size, tensor, the run's normalisation."""
    mean, std = model.vis_encoder.mean_std
    mean = tuple(cfg.data.mean) if cfg.data.mean else mean
    std = tuple(cfg.data.std) if cfg.data.std else std
    return build_test_transform(cfg.data.height, cfg.data.width, mean=mean, std=std)
