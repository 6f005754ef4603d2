"""Evaluation: ranking metrics (pure functions), distances, the protocols' ignore rule and
re-ranking (the community's reference function).

The protocols that embed a data set's test images and run its trials are in
:mod:`csetgraph.evaluation.protocols` (``evaluate_dataset``); feature extraction is in
:mod:`csetgraph.evaluation.features`.
"""

from csetgraph.evaluation.metrics import (
    RankMetrics,
    ignored_gallery,
    pairwise_distance,
    rank_metrics,
)
from csetgraph.evaluation.reranking import k_reciprocal_rerank

__all__ = [
    "RankMetrics",
    "ignored_gallery",
    "k_reciprocal_rerank",
    "pairwise_distance",
    "rank_metrics",
]
