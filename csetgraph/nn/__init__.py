"""PyG-style layers: MHGA (sparse, dense and heterogeneous) and the similarity exchange."""

from csetgraph.nn.exchange import (
    ExchangeEdges,
    ExchangeStats,
    SimilarityExchange,
    exchange_statistics,
    exchange_tokens,
)
from csetgraph.nn.mhga import PAPER_STRENGTHS, DenseMHGAConv, HeteroMHGAConv, MHGAConv

__all__ = [
    "PAPER_STRENGTHS",
    "DenseMHGAConv",
    "ExchangeEdges",
    "ExchangeStats",
    "HeteroMHGAConv",
    "MHGAConv",
    "SimilarityExchange",
    "exchange_statistics",
    "exchange_tokens",
]
