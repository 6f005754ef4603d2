"""PyG-style layers: MHGA (sparse and dense) and the similarity exchange."""

from csetgraph.nn.exchange import ExchangeEdges, SimilarityExchange, exchange_tokens
from csetgraph.nn.mhga import DenseMHGAConv, MHGAConv

__all__ = [
    "DenseMHGAConv",
    "ExchangeEdges",
    "MHGAConv",
    "SimilarityExchange",
    "exchange_tokens",
]
