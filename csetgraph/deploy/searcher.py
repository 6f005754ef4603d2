"""A saved gallery index with the model that built it: images in, ranked results out.

``csetgraph search`` and ``csetgraph serve`` both answer through :class:`GallerySearcher`, so
a query is embedded, checked against the index's model and ranked the same way in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from csetgraph.deploy.embedder import RunEmbedder, check_modality
from csetgraph.errors import ConfigError, IndexFolderError
from csetgraph.retrieval import GalleryIndex, ranked_hits

MAX_K = 1000


@dataclass
class GallerySearcher:
    """An index and the embedder of its run.

    Attributes:
        index: the gallery index.
        embedder: the run that embedded the gallery (checked by weights fingerprint).
        folder: the index folder.
    """

    index: GalleryIndex
    embedder: RunEmbedder
    folder: Path

    @classmethod
    def from_folder(
        cls, folder: str | Path, *, run: str | Path | None = None, device: str = "cpu"
    ) -> GallerySearcher:
        """Load the index in ``folder`` and its run (``run`` if the run folder has moved)."""
        index = GalleryIndex.load(folder)
        run = run or index.manifest.model.get("run")
        if not run:
            raise IndexFolderError(
                f"the index in {str(folder)!r} records no run; pass the run folder (--run)"
            )
        if not Path(run).exists():
            raise IndexFolderError(
                f"the index was built with run {str(run)!r}, which is not there any more; "
                "pass the run folder where it is now (--run)"
            )
        embedder = RunEmbedder.from_run(run, device=device)
        index.check_model(embedder.stamp)  # a different model is refused here, not per query
        return cls(index, embedder, Path(folder))

    @property
    def threshold(self) -> float | None:
        return self.index.manifest.threshold

    def search_images(
        self,
        images: Sequence[Image.Image],
        modality: str,
        k: int = 10,
        camid: int | None = None,
    ) -> list[dict[str, Any]]:
        """One :func:`~csetgraph.retrieval.ranked_hits` dict per query image."""
        check_modality(modality)
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")
        feats = self.embedder.embed_images(list(images), modality)
        camids = None if camid is None else [camid] * len(feats)
        distances, indices = self.index.search(
            feats, k, query_camids=camids, model=self.embedder.stamp
        )
        return [
            ranked_hits(self.index.metadata, d, i, self.threshold)
            for d, i in zip(distances, indices, strict=True)
        ]
