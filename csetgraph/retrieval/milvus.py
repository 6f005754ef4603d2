"""The gallery on Milvus, a distributed vector database, behind the same interface.

:class:`MilvusGalleryIndex` answers ``build``, ``add``, ``remove``, ``search``, ``items_of``,
``save`` and ``load`` as :class:`~csetgraph.retrieval.GalleryIndex` does, with the same
manifest (model fingerprint, preprocessing, open-set threshold, camera rule) and the same
distances (cosine distance ``1 - <q, g>`` of unit vectors, Milvus's inner-product metric).
Camera exclusion becomes a Milvus filter expression, ``camid not in [2]``.

Where the vectors live is a *store* (``csetgraph index ... --store``):

* ``milvus://host:19530`` (or ``http://`` / ``https://``): a Milvus server or cluster; a
  token (``user:password`` or an API key) comes from ``CSETGRAPH_MILVUS_TOKEN``;
* ``path/to/gallery.db``: Milvus Lite, the embedded form (``pip install milvus-lite``), one
  local file, no server;
* ``...#name`` after either picks the collection (default: from the index folder's name).

The index folder then holds only ``manifest.json`` (its ``store`` says where the vectors
are); items are rows of the collection: ``id`` (primary key), ``vector``, ``pid``,
``camid``, ``modality``, ``path`` and ``extra`` (every other metadata key, as JSON).

Durability is Milvus's: an insert or delete that returned is in its write-ahead log (the
message queue of a cluster; the local file of Milvus Lite, checked by the SIGKILL test).
Ids of added items are ``(microseconds since 1970 << 8) | 8 random bits``: unique across
several writers without a shared counter, increasing in time, and far above the build's
``0 .. N-1``.

Needs ``pymilvus`` (and ``milvus-lite`` for a ``.db`` file): the ``deploy`` extra.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from csetgraph.errors import ConfigError, IndexFolderError, IndexMismatchError, missing_dependency
from csetgraph.files import write_atomic
from csetgraph.retrieval.index import (
    REQUIRED_KEYS,
    GalleryItemError,
    IndexManifest,
    ManifestChecks,
    camera_groups,
    check_features,
    check_metadata,
    check_params,
    prepare_queries,
    read_manifest_and_items,
    utc_now,
)

ENGINE = "milvus"
TOKEN_ENV = "CSETGRAPH_MILVUS_TOKEN"
MAX_PATH = 4096
MAX_EXTRA = 65_535
BATCH = 1_000  # rows per insert and queries per search request
OUTPUT = ["pid", "camid", "modality", "path", "extra"]


def _pymilvus():
    try:
        import pymilvus
    except ImportError as err:
        raise missing_dependency("pymilvus", "deploy") from err
    return pymilvus


def parse_store(spec: str, folder: str | Path) -> dict[str, str]:
    """``--store`` as ``{"engine", "uri", "collection"}`` (see the module docstring)."""
    text, _, name = spec.partition("#")
    name = name or re.sub(r"\W", "_", Path(folder).resolve().name) or "gallery"
    if not re.fullmatch(r"[A-Za-z_]\w{0,254}", name):
        name = f"g_{name}"[:255]
    if text.startswith("milvus://"):
        uri = "http://" + text[len("milvus://") :]
    elif text.startswith(("http://", "https://")):
        uri = text
    elif text.endswith(".db"):
        uri = str(Path(text).resolve())
    else:
        raise ConfigError(
            f"--store {spec!r}: expected milvus://HOST:PORT, http(s)://HOST:PORT or a "
            "Milvus Lite file path ending in .db (add #NAME to pick the collection)"
        )
    if not re.fullmatch(r"[A-Za-z_]\w{0,254}", name):
        raise ConfigError(f"--store collection name {name!r}: use letters, digits and _")
    return {"engine": ENGINE, "uri": uri, "collection": name}


def connect(store: Mapping[str, str]):
    """A ``MilvusClient`` for ``store`` (the token, if any, from ``CSETGRAPH_MILVUS_TOKEN``)."""
    pymilvus = _pymilvus()
    uri = store["uri"]
    if not uri.startswith(("http://", "https://")):
        if not Path(uri).parent.is_dir():
            raise ConfigError(f"the Milvus Lite file's folder {str(Path(uri).parent)!r} is missing")
        try:
            import milvus_lite  # noqa: F401  (pymilvus starts it for a local .db file)
        except ImportError as err:
            raise missing_dependency("milvus-lite", "deploy") from err
    try:
        return pymilvus.MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))
    except pymilvus.MilvusException as err:
        raise IndexFolderError(f"cannot connect to Milvus at {uri!r}: {err.message}") from None


def _index_params(client, kind: str, params: Mapping[str, int]):
    ip = client.prepare_index_params()
    if kind == "flat":
        ip.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    elif kind == "ivf":
        ip.add_index(
            field_name="vector",
            index_type="IVF_FLAT",
            metric_type="IP",
            params={"nlist": params["nlist"]},
        )
    else:
        ip.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type="IP",
            params={"M": params["M"], "efConstruction": params["ef_construction"]},
        )
    return ip


def _search_params(kind: str, params: Mapping[str, int]) -> dict[str, Any]:
    if kind == "ivf":
        return {"metric_type": "IP", "params": {"nprobe": params["nprobe"]}}
    if kind == "hnsw":
        return {"metric_type": "IP", "params": {"ef": params["ef_search"]}}
    return {"metric_type": "IP"}


def _row(item_id: int, vector: np.ndarray, item: Mapping[str, Any]) -> dict[str, Any]:
    extra = json.dumps({k: v for k, v in item.items() if k not in REQUIRED_KEYS})
    if len(str(item["path"]).encode()) > MAX_PATH or len(extra.encode()) > MAX_EXTRA:
        raise IndexMismatchError(
            f"gallery item {item_id}: its path or extra metadata is too long for the database"
        )
    return {
        "id": int(item_id),
        "vector": vector.tolist(),
        "pid": int(item["pid"]),
        "camid": int(item["camid"]),
        "modality": str(item["modality"]),
        "path": str(item["path"]),
        "extra": extra,
    }


def _item(row: Mapping[str, Any]) -> dict[str, Any]:
    item = {k: row[k] for k in ("path", "pid", "camid", "modality")}
    item.update(json.loads(row.get("extra") or "{}"))
    return {**item, "pid": int(item["pid"]), "camid": int(item["camid"])}


def new_ids(n: int) -> list[int]:
    """``n`` fresh ids: microseconds since 1970 shifted by 8 bits, plus 8 random bits."""
    base = time.time_ns() // 1000
    return [((base + j) << 8) | secrets.randbits(8) for j in range(n)]


class MilvusGalleryIndex(ManifestChecks):
    """A gallery in a Milvus collection (see the module docstring); build, load, search.

    Shapes:
        - features: ``(N, D)`` float32, L2-normalised.
        - queries: ``(Q, D)``; distances and ids: ``(Q, k)``.
    """

    def __init__(self, client, manifest: IndexManifest, folder: Path | None = None):
        self._client = client
        self.manifest = manifest
        self._folder = folder
        self.lock = threading.RLock()

    @property
    def collection(self) -> str:
        return self.manifest.store["collection"]

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        features: Any,
        metadata: Sequence[Mapping[str, Any]],
        kind: str = "flat",
        *,
        store: Mapping[str, str],
        overwrite: bool = False,
        model: Mapping[str, str] | None = None,
        preprocess: Mapping[str, Any] | None = None,
        threshold: float | None = None,
        **params: int,
    ) -> MilvusGalleryIndex:
        """Create the collection ``store["collection"]`` and insert ``features`` (ids 0..N-1).

        An existing collection of that name is refused unless ``overwrite``.
        """
        x = check_features(features, "gallery features")
        meta = check_metadata(metadata, len(x))
        if len(x) == 0:
            raise IndexMismatchError("the gallery is empty: there is nothing to index")
        chosen = check_params(kind, params, len(x))
        pymilvus = _pymilvus()
        client = connect(store)
        name = store["collection"]
        if client.has_collection(name):
            if not overwrite:
                client.close()
                raise IndexFolderError(
                    f"the Milvus collection {name!r} at {store['uri']!r} already exists; pass "
                    "--overwrite to replace it, or pick another name with --store URI#NAME"
                )
            client.drop_collection(name)
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        dt = pymilvus.DataType
        schema.add_field("id", dt.INT64, is_primary=True)
        schema.add_field("vector", dt.FLOAT_VECTOR, dim=int(x.shape[1]))
        schema.add_field("pid", dt.INT64)
        schema.add_field("camid", dt.INT64)
        schema.add_field("modality", dt.VARCHAR, max_length=16)
        schema.add_field("path", dt.VARCHAR, max_length=MAX_PATH)
        schema.add_field("extra", dt.VARCHAR, max_length=MAX_EXTRA)
        client.create_collection(
            name, schema=schema, index_params=_index_params(client, kind, chosen)
        )
        manifest = IndexManifest(
            kind=kind,
            dim=int(x.shape[1]),
            params=chosen,
            model=dict(model or {}),
            preprocess=dict(preprocess or {}),
            threshold=threshold,
            next_id=len(x),
            store=dict(store),
        )
        gallery = cls(client, manifest)
        gallery._insert(list(range(len(x))), x, meta)
        return gallery

    def _insert(self, ids: list[int], x: np.ndarray, meta: list[dict]) -> None:
        for start in range(0, len(ids), BATCH):
            rows = [
                _row(i, v, m)
                for i, v, m in zip(
                    ids[start : start + BATCH],
                    x[start : start + BATCH],
                    meta[start : start + BATCH],
                    strict=True,
                )
            ]
            self._client.insert(self.collection, rows)

    # ------------------------------------------------------------------ changing

    def add(
        self, features: Any, metadata: Sequence[Mapping[str, Any]], *, when: str | None = None
    ) -> list[int]:
        """Insert gallery items; returns their new ids (durable once this returns)."""
        x = check_features(features, "added features")
        self.check_width(x.shape[1], "added features")
        meta = check_metadata(metadata, len(x))
        ids = new_ids(len(x))
        self._insert(ids, x, meta)
        with self.lock:
            self.manifest.last_added = when or utc_now()
            self.manifest.next_id = max(self.manifest.next_id, max(ids) + 1)
            if self._folder is not None:  # best effort: the time the page shows
                self._write_manifest(self._folder)
        return ids

    def remove(self, item_id: int) -> dict[str, Any]:
        """Delete gallery item ``item_id``; returns its metadata."""
        item = self.item(item_id)
        self._client.delete(self.collection, ids=[int(item_id)])
        return item

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.manifest.kind!r}, size={len(self)}, "
            f"dim={self.manifest.dim}, collection={self.collection!r})"
        )

    def _all_rows(self) -> list[dict[str, Any]]:
        it = self._client.query_iterator(
            self.collection, batch_size=BATCH, filter="id >= 0", output_fields=["id", *OUTPUT]
        )
        rows = []
        try:
            while page := it.next():
                rows.extend(page)
        finally:
            it.close()
        return sorted(rows, key=lambda r: r["id"])

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self._all_rows()]

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return [_item(r) for r in self._all_rows()]

    def items_of(self, ids: Any) -> dict[int, dict[str, Any]]:
        wanted = sorted({int(i) for i in np.asarray(ids).ravel().tolist() if i >= 0})
        if not wanted:
            return {}
        rows = self._client.get(self.collection, ids=wanted, output_fields=OUTPUT)
        return {int(r["id"]): _item(r) for r in rows}

    def item(self, item_id: int) -> dict[str, Any]:
        found = self.items_of([int(item_id)])
        if int(item_id) not in found:
            raise GalleryItemError(
                f"no gallery item with id {item_id}; the gallery holds {len(self)} items"
            )
        return found[int(item_id)]

    # ------------------------------------------------------------------ searching

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        query_camids: Sequence[int] | None = None,
        exclude_cameras: Mapping[int, set[int] | Sequence[int]] | None = None,
        model: Mapping[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`GalleryIndex.search`: ``(distances, ids)``, each ``(Q, k)``."""
        x = prepare_queries(self, queries, k, model)
        exclude = self.default_exclusion(query_camids, exclude_cameras)
        groups = camera_groups(len(x), query_camids, exclude)
        distances = np.full((len(x), k), np.inf, dtype=np.float32)
        indices = np.full((len(x), k), -1, dtype=np.int64)
        params = _search_params(self.manifest.kind, self.manifest.params)
        for cameras, rows in groups.items():
            expr = f"camid not in {sorted(cameras)}" if cameras else ""
            for start in range(0, len(rows), BATCH):
                part = rows[start : start + BATCH]
                hits = self._client.search(
                    self.collection,
                    data=x[part].tolist(),
                    limit=k,
                    filter=expr,
                    search_params=params,
                    output_fields=[],
                )
                for row, found in zip(part.tolist(), hits, strict=True):
                    for j, hit in enumerate(found[:k]):
                        indices[row, j] = int(hit["id"])
                        distances[row, j] = 1.0 - float(hit["distance"])
        return distances, indices

    # ------------------------------------------------------------------ persistence

    def _write_manifest(self, folder: Path) -> None:
        write_atomic(folder / "manifest.json", json.dumps(asdict(self.manifest), indent=2).encode())

    def save(self, folder: str | Path) -> Path:
        """Write ``manifest.json`` (with the store) into ``folder``; the rows are in Milvus."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self._client.flush(self.collection)
            self._write_manifest(folder)
        self._folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, writable: bool = False) -> MilvusGalleryIndex:
        """Open the collection an index folder's ``manifest.json`` names."""
        folder = Path(folder)
        manifest, _ = read_manifest_and_items(folder, ("manifest.json",))
        store = manifest.store
        if store.get("engine") != ENGINE or not store.get("uri") or not store.get("collection"):
            raise IndexFolderError(f"{str(folder)!r}: manifest.json names no Milvus store")
        client = connect(store)
        if not client.has_collection(store["collection"]):
            client.close()
            raise IndexFolderError(
                f"the Milvus collection {store['collection']!r} at {store['uri']!r} is gone; "
                "rebuild the index with `csetgraph index ... --store`"
            )
        client.load_collection(store["collection"])
        return cls(client, manifest, folder)

    def drop(self) -> None:
        """Delete the collection (tests and ``--overwrite`` clean up with this)."""
        self._client.drop_collection(self.collection)

    def close(self) -> None:
        self._client.close()
