"""Which store a gallery index lives in: faiss files in its folder (the default) or Milvus.

``open_gallery(folder)`` reads ``manifest.json`` and opens a
:class:`~csetgraph.retrieval.GalleryIndex` (faiss) or a
:class:`~csetgraph.retrieval.milvus.MilvusGalleryIndex`; ``build_gallery_index`` builds
either from the same arguments. Both answer the same methods (``add``, ``remove``,
``search``, ``items_of``, ``item``, ``save``, ``close``, ``len``) with the same meaning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from csetgraph.retrieval.index import GalleryIndex


def store_of(folder: str | Path) -> dict[str, Any]:
    """The ``store`` entry of a folder's manifest (empty for faiss or an unreadable file)."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    store = manifest.get("store") if isinstance(manifest, dict) else None
    return store if isinstance(store, dict) else {}


def open_gallery(folder: str | Path, *, writable: bool = False):
    """The gallery index in ``folder``, whichever store it lives in."""
    if store_of(folder).get("engine") == "milvus":
        from csetgraph.retrieval.milvus import MilvusGalleryIndex

        return MilvusGalleryIndex.load(folder, writable=writable)
    return GalleryIndex.load(folder, writable=writable)


def build_gallery_index(
    features: Any,
    metadata: Sequence[Mapping[str, Any]],
    kind: str = "flat",
    *,
    store: Mapping[str, str] | None = None,
    overwrite: bool = False,
    **kwargs: Any,
):
    """``GalleryIndex.build`` or, with a Milvus ``store``, ``MilvusGalleryIndex.build``."""
    if store:
        from csetgraph.retrieval.milvus import MilvusGalleryIndex

        return MilvusGalleryIndex.build(
            features, metadata, kind, store=store, overwrite=overwrite, **kwargs
        )
    return GalleryIndex.build(features, metadata, kind, **kwargs)
