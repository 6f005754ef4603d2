"""Evaluation: ranking metrics (pure functions), distances and re-ranking."""

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
