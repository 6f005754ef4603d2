"""Models: timm encoders, the CSET assembly, checkpoint filtering, and the config adapter."""

from csetgraph.models.build import build_model, check_input_size, model_kwargs, patch_size
from csetgraph.models.checkpoint import (
    CheckpointError,
    PretrainedReport,
    filter_vit_checkpoint,
    load_pretrained,
    read_state_dict,
)
from csetgraph.models.cset import CSET, BNNeck, CSETOutput, MHGABranch
from csetgraph.models.encoder import ViTEncoder

__all__ = [
    "CSET",
    "BNNeck",
    "CSETOutput",
    "CheckpointError",
    "MHGABranch",
    "PretrainedReport",
    "ViTEncoder",
    "build_model",
    "check_input_size",
    "filter_vit_checkpoint",
    "load_pretrained",
    "model_kwargs",
    "patch_size",
    "read_state_dict",
]
