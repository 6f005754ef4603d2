"""Training engine: the loop in stages, run folders, checkpoints, logging, distributed training."""

from csetgraph.engine.trainer import NonFiniteLossError, Trainer, evaluate_model, train
from csetgraph.engine.training_state import atomic_save, load_checkpoint, load_model_state

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "atomic_save",
    "evaluate_model",
    "load_checkpoint",
    "load_model_state",
    "train",
]
