"""Loading a trained run for figures: the shared loaders of :mod:`csetgraph.engine.runs`.

Every figure starts from the model (eval mode, weights from the checkpoint), the config it was
trained with, and the evaluation's test transform; the same functions serve
``csetgraph evaluate`` and the training loop.
"""

from csetgraph.engine.runs import eval_transform, load_run, run_folder

__all__ = ["eval_transform", "load_run", "run_folder"]
