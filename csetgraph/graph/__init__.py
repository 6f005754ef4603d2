"""Parameter-free graph builders: token graphs of image pairs and the SE edge selection."""

from csetgraph.graph.similarity import num_selected, select_exchange_edges, similarity_scores
from csetgraph.graph.token_graph import (
    ADJACENT,
    DISTANT,
    NODE_TYPES,
    RELATIONS,
    SAME,
    complete_token_graph,
    grid_coords,
    num_tokens,
    relation_matrix,
    to_homogeneous,
    token_graph_batch,
    token_graph_pair,
    token_graph_single,
    token_positions,
    token_relation,
)

__all__ = [
    "ADJACENT",
    "DISTANT",
    "NODE_TYPES",
    "RELATIONS",
    "SAME",
    "complete_token_graph",
    "grid_coords",
    "num_selected",
    "num_tokens",
    "relation_matrix",
    "select_exchange_edges",
    "similarity_scores",
    "to_homogeneous",
    "token_graph_batch",
    "token_graph_pair",
    "token_graph_single",
    "token_positions",
    "token_relation",
]
