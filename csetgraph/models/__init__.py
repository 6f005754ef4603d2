"""Models: timm encoders, the CSET assembly, checkpoint filtering, and the config adapter."""

from csetgraph.models.build import build_model, model_kwargs
from csetgraph.models.checkpoint import (
    CheckpointError,
    filter_vit_checkpoint,
    load_pretrained,
    read_state_dict,
)
from csetgraph.models.cset import CSET, BNNeck
from csetgraph.models.encoder import ViTEncoder

__all__ = [
    "CSET",
    "BNNeck",
    "CheckpointError",
    "ViTEncoder",
    "build_model",
    "filter_vit_checkpoint",
    "load_pretrained",
    "model_kwargs",
    "read_state_dict",
]
