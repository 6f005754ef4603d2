"""Models: timm encoders, the CSET assembly, checkpoint filtering, and the config adapter."""

from csetgraph.models.build import build_model, check_input_size, model_options, patch_size
from csetgraph.models.checkpoint import (
    CheckpointError,
    PretrainedReport,
    filter_vit_checkpoint,
    load_pretrained,
    read_state_dict,
)
from csetgraph.models.cset import CSET, BNNeck, CSETOutput, MHGABranch
from csetgraph.models.encoder import ViTEncoder
from csetgraph.models.options import (
    CAOptions,
    EncoderOptions,
    MHGAOptions,
    OptionError,
    SEOptions,
    TripletOptions,
)

__all__ = [
    "CSET",
    "BNNeck",
    "CAOptions",
    "CSETOutput",
    "CheckpointError",
    "EncoderOptions",
    "MHGABranch",
    "MHGAOptions",
    "OptionError",
    "PretrainedReport",
    "SEOptions",
    "TripletOptions",
    "ViTEncoder",
    "build_model",
    "check_input_size",
    "filter_vit_checkpoint",
    "load_pretrained",
    "model_options",
    "patch_size",
    "read_state_dict",
]
