"""Gallery search: a persistent faiss index of embeddings, camera rules and open-set matching.

Needs numpy and faiss only (the ``deploy`` extra); it never imports the model or the engine.
"""

from csetgraph.retrieval.index import KINDS, GalleryIndex, IndexManifest, default_params
from csetgraph.retrieval.openset import Calibration, calibrate_threshold, ranked_hits

__all__ = [
    "KINDS",
    "Calibration",
    "GalleryIndex",
    "IndexManifest",
    "calibrate_threshold",
    "default_params",
    "ranked_hits",
]
