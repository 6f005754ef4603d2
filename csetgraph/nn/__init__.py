"""PyG-style layers: MHGA (sparse and dense) and the similarity exchange."""

from csetgraph.nn.exchange import (
    ExchangeEdges,
    ExchangeStats,
    SimilarityExchange,
    exchange_statistics,
    exchange_tokens,
)
from csetgraph.nn.mhga import DenseMHGAConv, MHGAConv

__all__ = [
    "DenseMHGAConv",
    "ExchangeEdges",
    "ExchangeStats",
    "MHGAConv",
    "SimilarityExchange",
    "exchange_statistics",
    "exchange_tokens",
]
