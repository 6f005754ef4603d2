"""Reload a trained run: its config, its model and the evaluation's input transform.

``scripts/evaluate.py``, ``scripts/visualize.py``, the notebooks and the training loop all go
through these functions, so a model is rebuilt and fed the same way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from csetgraph.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
)
from csetgraph.data.transforms import build_test_transform
from csetgraph.engine.training_state import (
    load_checkpoint,
    load_model_state,
    retrieval_weights,
)
from csetgraph.models import CheckpointError, build_model
from csetgraph.models.cset import CSET


def run_folder(path: str | Path) -> Path:
    """The run folder of ``path``: a run folder itself, or ``<run>/checkpoints/<file>.pt``."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def resolve_run_config(
    path: str | Path, ckpt: dict, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> Config:
    """``config`` if given, else the run folder's ``config.yaml``, else the checkpoint's copy."""
    if config is not None:
        return load_config(config, overrides)
    saved = run_folder(path) / "config.yaml"
    if saved.is_file():
        return load_config(saved, overrides)
    if "config" not in ckpt:
        raise ConfigError(
            f"no config.yaml next to {str(path)!r} and no config stored in the checkpoint; "
            "pass the recipe the model was trained with (--config)"
        )
    return checkpoint_config(ckpt, overrides)


def checkpoint_config(ckpt: dict, overrides: Sequence[str] = ()) -> Config:
    """The config stored in a training checkpoint, with dotted overrides applied."""
    if "config" not in ckpt:
        raise CheckpointError("the checkpoint stores no config (best.pt keeps only weights)")
    tree = json.loads(ckpt["config"])
    return config_from_dict(apply_overrides(tree, overrides))  # checks keys, types, ranges


def checkpoint_num_classes(ckpt: dict, path: str | Path) -> int:
    """Training classes of a checkpoint (``best.pt`` keeps only weights: the classifier's rows)."""
    if "num_classes" in ckpt:
        return int(ckpt["num_classes"])
    weight = ckpt["model"].get("neck.classifier.weight")
    if weight is None:
        raise CheckpointError(
            f"{str(path)!r} records no num_classes and has no neck.classifier.weight"
        )
    return int(weight.shape[0])


def model_from_checkpoint(
    ckpt: dict, cfg: Config, path: str | Path, device: torch.device | str = "cpu"
) -> CSET:
    """Build ``cfg``'s model, load the checkpoint's weights, eval mode on ``device``."""
    # The checkpoint holds every weight: never look for the file training started from.
    cfg.model.pretrained = ""
    model = build_model(
        cfg.model, checkpoint_num_classes(ckpt, path), (cfg.data.height, cfg.data.width)
    )
    load_model_state(model, retrieval_weights(ckpt), f"checkpoint {str(path)!r}")
    return model.to(device).eval()


def load_run(
    path: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: torch.device | str = "cpu",
) -> tuple[CSET, Config]:
    """The trained model (eval mode, on ``device``) and its config.

    Args:
        path: a run folder (its ``checkpoints/last.pt``) or a checkpoint file (``last.pt`` or
            ``best.pt``).
        config: a recipe to use instead of the run's own config.
        overrides: dotted ``key=value`` overrides, e.g. ``data.root=/data/SYSU-MM01`` when the
            data set has moved since training.
        device: where to put the model.

    Raises:
        CheckpointError: no checkpoint there, or weights of another model configuration.
    """
    ckpt = load_checkpoint(path)
    cfg = resolve_run_config(path, ckpt, config, overrides)
    return model_from_checkpoint(ckpt, cfg, path, device), cfg


def input_stats(model: CSET, cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean and std: ``data.mean``/``data.std``, else the backbone's own."""
    mean, std = model.vis_encoder.mean_std
    return (
        tuple(cfg.data.mean) if cfg.data.mean else mean,
        tuple(cfg.data.std) if cfg.data.std else std,
    )


def eval_transform(model: CSET, cfg: Config, *, mean=None, std=None):
    """The evaluation's transform: resize to the input size, tensor, the run's normalisation.

    ``mean`` and ``std`` default to :func:`input_stats` of ``model``; the trainer passes the
    ones it trained with. Every evaluation (training's, commands', figures') builds it here.
    """
    if mean is None or std is None:
        mean, std = input_stats(model, cfg)
    return build_test_transform(cfg.data.height, cfg.data.width, mean=mean, std=std)
