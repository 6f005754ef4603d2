"""A trained CSET in one safetensors file: float16 tensors, the config in the metadata.

The format of ``weights/synthetic_cset.safetensors`` (weights/README.md), small enough to
ship: the notebooks load a trained model from it without training one first.

>>> model, cfg = load_shipped_model("weights/synthetic_cset.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from csetgraph.config import Config, config_from_dict, config_to_dict
from csetgraph.files import atomic_path
from csetgraph.models.build import build_model
from csetgraph.models.cset import CSET


def save_shipped_model(model: CSET, cfg: Config, path: str | Path, command: str = "") -> Path:
    """Write ``model``'s state dict (floats as float16) and ``cfg`` to ``path`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {
        k: v.detach().cpu().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {
        "config": json.dumps(config_to_dict(cfg), sort_keys=True),
        "num_classes": str(model.neck.classifier.out_features),
        "command": command,
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_shipped_model(path: str | Path) -> tuple[CSET, Config]:
    """The model (float32, eval mode, CPU) and the config it was trained with."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    cfg = config_from_dict(json.loads(meta["config"]))
    cfg.model.pretrained = ""  # every weight is in the file
    model = build_model(cfg.model, int(meta["num_classes"]), (cfg.data.height, cfg.data.width))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval(), cfg
