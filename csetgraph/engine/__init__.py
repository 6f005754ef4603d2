"""Training engine: the loop in stages, run folders, checkpoints, logging, distributed training."""

from csetgraph.engine.checkpoint import atomic_save, load_checkpoint, load_model_state
from csetgraph.engine.trainer import NonFiniteLossError, Trainer, evaluate_model, train

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "atomic_save",
    "evaluate_model",
    "load_checkpoint",
    "load_model_state",
    "train",
]
