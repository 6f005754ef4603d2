"""Gallery search: a persistent faiss index of embeddings, camera rules and open-set matching.

Needs numpy and faiss only (the ``deploy`` extra); it never imports the model or the engine.
The same gallery on Milvus (``csetgraph.retrieval.milvus``) needs ``pymilvus`` too.
"""

from csetgraph.retrieval.index import (
    KINDS,
    GalleryIndex,
    GalleryItemError,
    IndexManifest,
    check_params,
    default_params,
)
from csetgraph.retrieval.openset import Calibration, calibrate_threshold, ranked_hits
from csetgraph.retrieval.store import build_gallery_index, open_gallery

__all__ = [
    "KINDS",
    "Calibration",
    "GalleryIndex",
    "GalleryItemError",
    "IndexManifest",
    "build_gallery_index",
    "calibrate_threshold",
    "check_params",
    "default_params",
    "open_gallery",
    "ranked_hits",
]
