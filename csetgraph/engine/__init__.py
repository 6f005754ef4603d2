"""Training engine: the loop, checkpoints, logging, distributed training."""

from csetgraph.engine.checkpoint import atomic_save, load_checkpoint, load_model_state
from csetgraph.engine.trainer import NonFiniteLossError, evaluate_model, train

__all__ = [
    "NonFiniteLossError",
    "atomic_save",
    "evaluate_model",
    "load_checkpoint",
    "load_model_state",
    "train",
]
