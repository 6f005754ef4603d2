"""A saved gallery index with the model that built it: images in, ranked results out.

``csetgraph search``, ``csetgraph serve`` and ``csetgraph index add`` all go through
:class:`GallerySearcher`, so a query or an added image is embedded, checked against the
index's model and stored or ranked the same way in each.

Images added to a gallery are copied into the index folder's ``uploads/`` (named by their
content digest and a random tag, written atomically), so the folder holds every image it
can show; the service serves gallery images only from the gallery's recorded roots
(:meth:`roots`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from csetgraph.deploy.embedder import RunEmbedder, check_modality
from csetgraph.errors import ConfigError, IndexFolderError
from csetgraph.retrieval import open_gallery, ranked_hits
from csetgraph.retrieval.index import utc_now, write_atomic

MAX_K = 1000
UPLOADS = "uploads"


@dataclass
class GallerySearcher:
    """An index and the embedder of its run.

    Attributes:
        index: the gallery index (faiss or Milvus, :func:`~csetgraph.retrieval.open_gallery`).
        embedder: the run that embedded the gallery (checked by weights fingerprint).
        folder: the index folder.
    """

    index: Any
    embedder: RunEmbedder
    folder: Path

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        *,
        run: str | Path | None = None,
        device: str = "cpu",
        writable: bool = False,
    ) -> GallerySearcher:
        """Load the index in ``folder`` and its run (``run`` if the run folder has moved).

        ``writable``: additions and removals are logged durably (see :mod:`csetgraph.retrieval`).
        """
        index = open_gallery(folder, writable=writable)
        run = run or index.manifest.model.get("run")
        if not run:
            index.close()
            raise IndexFolderError(
                f"the index in {str(folder)!r} records no run; pass the run folder (--run)"
            )
        if not Path(run).exists():
            index.close()
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

    @property
    def modality(self) -> str | None:
        """The modality of the gallery's images (``None`` if the index does not record it)."""
        return self.index.manifest.preprocess.get("modality")

    def roots(self) -> list[Path]:
        """Folders whose files the gallery may show: its source (the data set's root or the
        image folder it was built from) and its ``uploads/``, resolved."""
        source = self.index.manifest.source
        roots = [self.folder / UPLOADS]
        for key in ("images", "root"):
            if source.get(key):
                roots.append(Path(source[key]))
        return [Path(os.path.realpath(r)) for r in roots]

    def relative_path(self, path: str) -> str:
        """``path`` relative to the gallery root holding it (else its file name only)."""
        absolute = Path(os.path.abspath(path))
        # An upload is named from the index folder ("uploads/..."), a source image from its root.
        for root in [Path(os.path.realpath(self.folder)), *self.roots()[1:]]:
            for base in (root, Path(os.path.abspath(root))):
                if absolute.is_relative_to(base):
                    return absolute.relative_to(base).as_posix()
        return absolute.name

    def servable_file(self, path: str) -> Path | None:
        """The resolved file of ``path`` if it exists under one of :meth:`roots`, else ``None``.

        Symbolic links are followed before the check, so a link out of a root is refused.
        """
        try:
            real = Path(os.path.realpath(path, strict=True))
        except OSError:
            return None
        if not real.is_file():
            return None
        return real if any(real.is_relative_to(root) for root in self.roots()) else None

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
        distances, ids = self.index.search(feats, k, query_camids=camids, model=self.embedder.stamp)
        items = self.index.items_of(ids)
        return [
            ranked_hits(items, d, i, self.threshold) for d, i in zip(distances, ids, strict=True)
        ]

    def store_upload(self, data: bytes, suffix: str) -> Path:
        """Write an added image's bytes into ``uploads/``, durably (fsynced, then renamed).

        Named by a digest of the content and a random tag, so every addition has its own
        file and removing one item removes only its image.
        """
        folder = self.folder / UPLOADS
        folder.mkdir(exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()[:24]
        path = folder / f"{digest}-{secrets.token_hex(4)}{suffix.lower()}"
        write_atomic(path, data)
        return path

    def add_images(
        self,
        images: Sequence[Image.Image],
        paths: Sequence[str | Path],
        modality: str,
        camid: int,
        *,
        pid: int = -1,
        time: str | None = None,
        names: Sequence[str] | None = None,
    ) -> list[int]:
        """Embed ``images`` (stored at ``paths``) and add them to the gallery; their new ids.

        Args:
            images: decoded images.
            paths: where each image's file is (an ``uploads/`` copy, :meth:`store_upload`).
            modality: must be the gallery's (a gallery holds one modality).
            camid: the camera that took them.
            pid: their identity, ``-1`` if unknown.
            time: when they were taken (free text, e.g. ISO 8601), stored with each item.
            names: original file names, stored with each item.
        """
        check_modality(modality)
        if self.modality and modality != self.modality:
            raise ConfigError(
                f"this gallery holds {self.modality} images; add {self.modality} images "
                f"(got {modality}), or build a {modality} gallery with `csetgraph index`"
            )
        if camid < 0:
            raise ConfigError(f"the camera must be a number >= 0, got {camid}")
        feats = self.embedder.embed_images(list(images), modality)
        metadata = []
        for j, path in enumerate(paths):
            item: dict[str, Any] = {
                "path": str(path),
                "pid": int(pid),
                "camid": int(camid),
                "modality": modality,
            }
            if time:
                item["time"] = str(time)
            if names:
                item["name"] = str(names[j])
            metadata.append(item)
        return self.index.add(feats, metadata, when=utc_now())
