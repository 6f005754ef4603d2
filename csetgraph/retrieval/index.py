"""A persistent gallery of embeddings searched with faiss, under the protocols' camera rules.

The gallery holds L2-normalised embeddings, so an inner-product index ranks by cosine
similarity and the distance reported is the cosine distance

.. math::
    d(q, g) = 1 - \\langle q, g \\rangle \\in [0, 2],

nearest first. Three kinds of faiss index are offered:

* ``flat``: exact, every gallery item is compared (the reference);
* ``ivf``: the gallery is clustered into ``nlist`` cells and a query visits ``nprobe`` of them;
* ``hnsw``: a navigable small-world graph with ``M`` links per node, searched with
  ``ef_search`` candidates.

Camera rules (SYSU-MM01 never returns camera 2 for a query of camera 3) are applied inside
faiss with an id selector, so ``k`` results are still returned when enough items remain.

Every item has a gallery id, given in order of addition and never reused: ``search`` returns
ids, and :meth:`GalleryIndex.remove` deletes one (the vector is erased at once, for ``hnsw``
by overwriting it with zeros, since faiss cannot unlink a graph node).

A saved index is a folder::

    index.faiss     the faiss index (ids mapped to gallery ids)
    metadata.json   one dict per gallery item: id, path, pid, camid, modality, ...
    manifest.json   kind, params, feature width, the model (run folder and weights
                    fingerprint), the preprocessing, the open-set threshold, the next id
    additions.wal   additions and removals since the three files were written (optional)

An index opened with ``writable=True`` appends each addition and removal to
``additions.wal`` and fsyncs it before the change is applied in memory, so a change that
returned survives a crash (SIGKILL, power loss after the fsync); :meth:`GalleryIndex.load`
replays the log after the snapshot, and :meth:`GalleryIndex.save` writes a new snapshot
and empties the log (opening for writes does so when the log held anything). Replaying is
idempotent (an id already present is not added again, a removed id is not removed again),
so a crash between the snapshot's files and the log's truncation still loads to the same
gallery.

This module needs numpy and faiss only: it never imports the model or the engine.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csetgraph.errors import (
    ConfigError,
    IndexFolderError,
    IndexMismatchError,
    UserError,
    missing_dependency,
)
from csetgraph.files import write_atomic

KINDS = ("flat", "ivf", "hnsw")
REQUIRED_KEYS = ("path", "pid", "camid", "modality")
FILES = ("index.faiss", "metadata.json", "manifest.json")
WAL_NAME = "additions.wal"
FORMAT_VERSION = 2  # 2: gallery ids, removals, the addition log; 1 still loads (id = row)
#: Accepted range of each index parameter, checked before faiss sees it (faiss aborts the
#: process on ``M=0`` and allocates without bound on ``M=-1``).
PARAM_RANGES = {
    "nlist": (1, None),  # at most the gallery size, checked in check_params
    "nprobe": (1, None),  # at most nlist
    "M": (2, 256),
    "ef_construction": (1, 65_536),
    "ef_search": (1, 65_536),
}
IVF_TRAIN_PER_CELL = 64  # k-means training rows per IVF cell (faiss needs >= 39)
IVF_TRAIN_SEED = 0


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise missing_dependency("faiss-cpu", "deploy") from err
    return faiss


@dataclass
class IndexManifest:
    """What a saved index was built with; checked against every query.

    Attributes:
        kind: ``flat``, ``ivf`` or ``hnsw``.
        dim: the feature width ``D``.
        params: the kind's parameters (``nlist``/``nprobe``, ``M``/``ef_search``, ...).
        model: the model that embedded the gallery: ``{"run": folder, "weights": fingerprint}``.
        preprocess: how images were prepared: height, width, mean, std.
        threshold: open-set distance threshold (``None``: every result is a match).
        calibration: how the threshold was chosen (target false-match rate, pairs, ...).
        exclude_cameras: the protocol's camera rule, query camera (as text, for JSON) ->
            gallery cameras; used by :meth:`GalleryIndex.search` when a query camera is given.
        source: where the gallery came from (data set, root and split, or an image folder).
        next_id: the id the next added item gets (ids are never reused).
        last_added: UTC time (ISO 8601) of the last addition after the build, or ``None``.
        wal_seq: the last addition-log record the saved files include.
        store: where the vectors live: empty for the faiss files in the folder, or
            ``{"engine": "milvus", "uri", "collection"}`` (:mod:`csetgraph.retrieval.milvus`).
    """

    kind: str
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    exclude_cameras: dict[str, list[int]] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    next_id: int = 0
    last_added: str | None = None
    wal_seq: int = 0
    store: dict[str, str] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def camera_rule(self) -> dict[int, set[int]]:
        return {int(q): set(g) for q, g in self.exclude_cameras.items()}


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds (``2026-12-04T14:03:06Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_features(features: Any, what: str) -> np.ndarray:
    """``features`` as a C-contiguous float32 ``(N, D)`` array of unit rows, or an error."""
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] == 0:
        raise IndexMismatchError(f"{what} must be a (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise IndexMismatchError(f"{what} hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1)
    if len(x) and np.abs(norms - 1).max() > 1e-3:
        raise IndexMismatchError(
            f"{what} must be L2-normalised (norms range {norms.min():.4g}..{norms.max():.4g}); "
            "use model.embed or divide each row by its norm"
        )
    return x


def check_item(item: Any, where: str) -> dict[str, Any]:
    """One gallery item's metadata with integer ``pid`` and ``camid``, or a one-line error."""
    if not isinstance(item, Mapping):
        raise IndexMismatchError(f"{where} is not a dict; each item needs {REQUIRED_KEYS}")
    missing = [k for k in REQUIRED_KEYS if k not in item]
    if missing:
        raise IndexMismatchError(f"{where} lacks {missing}; each item needs {REQUIRED_KEYS}")
    try:
        return {**item, "pid": int(item["pid"]), "camid": int(item["camid"])}
    except (TypeError, ValueError):
        raise IndexMismatchError(
            f"{where} has pid {item['pid']!r} and camid {item['camid']!r}; both must be integers"
        ) from None


def check_metadata(metadata: Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(metadata) != n:
        raise IndexMismatchError(f"{n} feature rows but {len(metadata)} metadata entries")
    return [check_item(item, f"metadata[{i}]") for i, item in enumerate(metadata)]


def check_params(kind: str, params: Mapping[str, Any], n: int) -> dict[str, int]:
    """``default_params(kind, n)`` with ``params`` applied, each checked before faiss sees it.

    Raises:
        ConfigError: an unknown parameter, a non-integer, or a value out of its range
            (``PARAM_RANGES``; ``nlist`` at most the gallery size, ``nprobe`` at most
            ``nlist``).
    """
    chosen = default_params(kind, n)
    unknown = set(params) - set(chosen)
    if unknown:
        raise ConfigError(
            f"{kind} index takes {sorted(chosen) or 'no parameters'}, not {sorted(unknown)}"
        )
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"index parameter {name}={value!r} must be an integer")
        chosen[name] = int(value)
    limits = dict(PARAM_RANGES)
    if kind == "ivf":
        limits["nlist"] = (1, max(1, n))
        limits["nprobe"] = (1, chosen["nlist"])
    for name, value in chosen.items():
        low, high = limits[name]
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            why = {
                "nlist": f" (the gallery has {n} items; each cell needs some)",
                "nprobe": " (the cells a query visits, at most nlist)",
            }.get(name, "")
            raise ConfigError(
                f"index parameter {name}={value} is out of range: it must be {span}{why}; "
                f"the default for {n} items is {default_params(kind, n)}"
            )
    return chosen


def camera_groups(
    n: int, query_camids: Sequence[int] | None, exclude: Mapping[int, Any]
) -> dict[tuple[int, ...], np.ndarray]:
    """Query rows grouped by the gallery cameras they exclude (one search per group)."""
    if not exclude:
        return {(): np.arange(n)}
    if query_camids is None or len(query_camids) != n:
        raise ConfigError("exclude_cameras needs query_camids: one camera per query")
    keys = [tuple(sorted(exclude.get(int(c), ()))) for c in query_camids]
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return {key: np.asarray(rows) for key, rows in groups.items()}


def prepare_queries(index, queries: Any, k: int, model: Mapping[str, str] | None) -> np.ndarray:
    """Checks every store makes before a search: model, width, unit rows, ``k``."""
    index.check_model(model)
    x = np.asarray(queries, dtype=np.float32)
    if x.ndim == 2:
        index.check_width(x.shape[1], "query features")
    x = check_features(x, "query features")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    return x


class ManifestChecks:
    """What every gallery store shares: the manifest's model and width checks, item lookup.

    Subclasses hold ``manifest`` and implement ``items_of``.
    """

    manifest: IndexManifest

    def check_width(self, dim: int, what: str) -> None:
        if dim != self.manifest.dim:
            raise IndexMismatchError(
                f"{what} are {dim}-dimensional but the index holds {self.manifest.dim}-"
                "dimensional features: embed them with the model the index was built with"
            )

    def check_model(self, model: Mapping[str, str] | None) -> None:
        """Refuse queries embedded by a model other than the gallery's (by weights fingerprint)."""
        if model is None or not self.manifest.model.get("weights"):
            return
        if model.get("weights") != self.manifest.model["weights"]:
            raise IndexMismatchError(
                f"the query model (run {model.get('run', '?')!r}, weights "
                f"{str(model.get('weights'))[:12]}) is not the one that built this index (run "
                f"{self.manifest.model.get('run', '?')!r}, weights "
                f"{self.manifest.model['weights'][:12]}); rebuild the index with `csetgraph "
                "index` or query it with its own run"
            )

    def default_exclusion(self, query_camids, exclude_cameras):
        if exclude_cameras is None:
            return self.manifest.camera_rule() if query_camids is not None else {}
        return exclude_cameras


# ---------------------------------------------------------------------- the addition log


def _frame(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"))
    return f"{zlib.crc32(text.encode()):08x} {text}\n".encode()


def encode_vector(x: np.ndarray) -> str:
    return base64.b64encode(np.asarray(x, dtype="<f4").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


class AdditionLog:
    """An append-only log of a gallery's additions and removals, fsynced on every append.

    One record per line: ``<crc32 hex> <json>``. A last line cut short by a crash (no
    newline, or a checksum that does not match) was never acknowledged and is dropped; a bad
    line before the last is corruption and refused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = None

    @staticmethod
    def read(path: str | Path) -> tuple[list[dict[str, Any]], int]:
        """The records of a log and the byte length of its good part."""
        path = Path(path)
        if not path.is_file():
            return [], 0
        data = path.read_bytes()
        records, good = [], 0
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1], 1):  # the part after the last \n is torn
            record = _parse_line(line)
            if record is None:
                if number == len(lines) - 1 and not lines[-1]:
                    break  # the last complete line is torn: a write that never returned
                raise IndexFolderError(
                    f"{str(path)!r} line {number} is corrupt (checksum mismatch); restore the "
                    "index folder from a backup or rebuild it with `csetgraph index`"
                )
            records.append(record)
            good += len(line) + 1
        return records, good

    def open(self) -> None:
        """Open for appending, first cutting off a torn tail."""
        _, good = self.read(self.path)
        if self.path.is_file() and self.path.stat().st_size != good:
            os.truncate(self.path, good)
        fresh = not self.path.is_file()
        self._fh = open(self.path, "ab")  # kept open between appends
        if fresh:
            _fsync_dir(self.path.parent)

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self._fh is None:
            self.open()
        self._fh.write(b"".join(_frame(r) for r in records))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def clear(self) -> None:
        """Empty the log (after a snapshot that includes every record)."""
        if self._fh is not None:
            self._fh.truncate(0)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _parse_line(line: bytes) -> dict[str, Any] | None:
    crc, _, text = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(text):
            return None
        return json.loads(text)
    except ValueError:
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_params(kind: str, n: int) -> dict[str, int]:
    """Parameters of a ``kind`` index over ``n`` gallery items, growing with ``n``.

    * ``ivf``: ``nlist`` ~ 4 sqrt(n) cells (at most n / 39, so that every cell has the 39
      training rows faiss asks for; k-means trains on at most ``IVF_TRAIN_PER_CELL`` = 64 rows
      per cell, a seeded sample); a query visits ``nprobe`` = nlist / 16 of them (at least 32,
      at most all), so the scanned share of the gallery stays ~6% as it grows.
    * ``hnsw``: ``M`` = 32 links per node, ``ef_construction`` = 160, and ``ef_search`` = 64
      up to 10,000 items plus 16 for every doubling beyond (128 at 100k, 144 at 200k, 176 at
      1M): a larger graph needs a wider beam to reach the same neighbours.

    Recall@10 against the exact top 10 (numpy) with these parameters, on the re-id-like
    gallery of ``benchmarks/bench_search.py`` (D = 768, its seeds, 500 queries):

    ======  ==========================  =========================
    n       ivf nlist / nprobe: recall  hnsw ef_search: recall
    ======  ==========================  =========================
    10k     256 / 32: 1.000             64: 1.000
    100k    1264 / 79: 1.000            128: 1.000
    200k    1788 / 111: 1.000           144: 1.000
    1M      4000 / 250: 0.995           176: 1.000
    ======  ==========================  =========================

    Rows up to 200k: ``python benchmarks/bench_search.py --gallery N --queries 500 --kinds
    numpy ivf hnsw``; 1M: ``python benchmarks/bench_search.py --threads 2`` (10,000 queries;
    the hnsw graph took 29 min to build on two cores). Sweeps on the same galleries reached
    1.000 at nprobe 8 (100k, 200k) and >= 0.999 at ef_search 32 (every size).

    The same recipe at D = 64 needs more probes (50k items: nprobe 55 gives 0.979, 16 gives
    0.944) and at D = 32 more still (nprobe 55: 0.906): check recall on small features. With
    a large variation shared by all identities (``--shared 0.9``, 200k) ivf gives 0.930 and
    hnsw 0.994: k-means cuts along that variation and scatters an identity over many cells.
    """
    if kind == "flat":
        return {}
    if kind == "ivf":
        nlist = int(max(1, min(4 * np.sqrt(max(n, 1)), n // 39)))
        return {"nlist": nlist, "nprobe": min(nlist, max(32, nlist // 16))}
    if kind == "hnsw":
        doublings = max(0, int(np.ceil(np.log2(max(n, 1) / 10_000))))
        return {"M": 32, "ef_construction": 160, "ef_search": 64 + 16 * doublings}
    raise ConfigError(f"index kind {kind!r} is not one of {KINDS}")


def _ivf_training_sample(x: np.ndarray, nlist: int) -> np.ndarray:
    """At most ``IVF_TRAIN_PER_CELL * nlist`` rows of ``x``, drawn with a fixed seed.

    faiss's k-means would otherwise train on up to 256 rows per cell (all 1,000,000 rows of a
    1M gallery with 4,000 cells), 4x the work of this sample. On a 200k x 768 gallery of an
    earlier version of the benchmark's recipe, training on all rows gave no better recall
    (nprobe 256: 0.944 against the sample's 0.951).
    """
    size = IVF_TRAIN_PER_CELL * nlist
    if len(x) <= size:
        return x
    rows = np.random.default_rng(IVF_TRAIN_SEED).choice(len(x), size, replace=False)
    return x[np.sort(rows)]


def _new_faiss_index(kind: str, dim: int, params: Mapping[str, int], train: np.ndarray):
    """An empty faiss index that keeps gallery ids: ``IndexIDMap2`` around flat and hnsw
    (whose rows are positions), the IVF index itself (it stores ids in its lists)."""
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        nlist = int(params["nlist"])
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # faiss's Python wrapper keeps the quantizer alive with the index.
        index.train(_ivf_training_sample(train, nlist))
        return index
    hnsw = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = int(params["ef_construction"])
    return faiss.IndexIDMap2(hnsw)


def _with_ids(index, kind: str, n: int):
    """A version-1 index (rows are ids) wrapped so that it keeps gallery ids too."""
    faiss = _faiss()
    if kind == "ivf" or isinstance(index, faiss.IndexIDMap2):
        return index
    # IndexIDMap2 only wraps an empty index: wrap it as empty, then restore its size.
    index.ntotal = 0
    wrapped = faiss.IndexIDMap2(index)
    index.ntotal = wrapped.ntotal = n
    faiss.copy_array_to_vector(np.arange(n, dtype=np.int64), wrapped.id_map)
    wrapped.construct_rev_map()
    return wrapped


def _search_params(kind: str, params: Mapping[str, int], selector=None):
    faiss = _faiss()
    if kind == "ivf":
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(params["nprobe"]))
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(params["ef_search"]))
    return faiss.SearchParameters(sel=selector)


class GalleryIndex(ManifestChecks):
    """Embeddings of a gallery, their metadata and the manifest of how they were made.

    Build one with :meth:`build` or :meth:`load`, never with the constructor. Searches,
    additions and removals may come from several threads: they take turns on a lock (faiss
    itself uses all its threads for each search).

    Example::

        index = GalleryIndex.build(features, metadata, kind="hnsw")
        distances, ids = index.search(queries, k=10, query_camids=[3, 3],
                                      exclude_cameras={3: {2}})
        new_ids = index.add(more_features, more_metadata)
        index.remove(new_ids[0])
        index.save("gallery/")

    Shapes:
        - features: ``(N, D)`` float32, L2-normalised.
        - queries: ``(Q, D)``; distances and ids: ``(Q, k)``.
    """

    def __init__(
        self,
        faiss_index,
        items: dict[int, dict[str, Any]],
        manifest: IndexManifest,
        faiss_ids: np.ndarray | None = None,
    ):
        self._index = faiss_index
        self._items = items  # gallery id -> metadata, in order of addition
        self.manifest = manifest
        self.manifest.next_id = max(manifest.next_id, max(items, default=-1) + 1)
        # Every id faiss holds (flat, hnsw: in row order) and its camera; for hnsw also the
        # erased ids of removed items, which faiss cannot unlink and searches must skip.
        ids = np.fromiter(items, np.int64, len(items)) if faiss_ids is None else faiss_ids
        self._ids = np.asarray(ids, dtype=np.int64)
        self._cams = np.array([items[i]["camid"] if i in items else -1 for i in ids.tolist()])
        self._cams = self._cams.astype(np.int64)
        self._erased = {int(i) for i in self._ids.tolist() if i not in items}
        self._log: AdditionLog | None = None
        self._seq = manifest.wal_seq
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        features: Any,
        metadata: Sequence[Mapping[str, Any]],
        kind: str = "flat",
        *,
        model: Mapping[str, str] | None = None,
        preprocess: Mapping[str, Any] | None = None,
        threshold: float | None = None,
        **params: int,
    ) -> GalleryIndex:
        """Index ``features`` (one row per ``metadata`` entry) with a faiss index of ``kind``.

        Args:
            features: ``(N, D)`` L2-normalised embeddings.
            metadata: per row at least ``path``, ``pid`` (-1 if unknown), ``camid``, ``modality``.
            kind: ``flat`` (exact), ``ivf`` or ``hnsw``.
            model: ``{"run": ..., "weights": ...}`` of the model that embedded them.
            preprocess: height, width, mean and std the images were prepared with.
            threshold: open-set distance threshold, if calibrated.
            params: overrides of :func:`default_params` (``nlist``, ``nprobe``, ``M``, ...),
                checked by :func:`check_params`.

        The items get ids ``0 .. N-1`` in row order.
        """
        x = check_features(features, "gallery features")
        meta = check_metadata(metadata, len(x))
        if len(x) == 0:
            raise IndexMismatchError("the gallery is empty: there is nothing to index")
        chosen = check_params(kind, params, len(x))
        index = _new_faiss_index(kind, x.shape[1], chosen, x)
        index.add_with_ids(x, np.arange(len(x), dtype=np.int64))
        manifest = IndexManifest(
            kind=kind,
            dim=int(x.shape[1]),
            params=chosen,
            model=dict(model or {}),
            preprocess=dict(preprocess or {}),
            threshold=threshold,
            next_id=len(x),
        )
        return cls(index, dict(enumerate(meta)), manifest)

    # ------------------------------------------------------------------ changing

    def add(
        self, features: Any, metadata: Sequence[Mapping[str, Any]], *, when: str | None = None
    ) -> list[int]:
        """Append gallery items; returns their new ids.

        With an addition log (``load(..., writable=True)``), the items are on disk (fsync)
        before they are searchable and before this returns.
        """
        x = check_features(features, "added features")
        self.check_width(x.shape[1], "added features")
        meta = check_metadata(metadata, len(x))
        when = when or utc_now()
        with self.lock:
            ids = list(range(self.manifest.next_id, self.manifest.next_id + len(x)))
            if self._log is not None:
                self._log.append(
                    [
                        {
                            "seq": self._seq + 1 + j,
                            "op": "add",
                            "id": i,
                            "item": m,
                            "vector": encode_vector(v),
                            "time": when,
                        }
                        for j, (i, m, v) in enumerate(zip(ids, meta, x, strict=True))
                    ]
                )
            self._seq += len(ids) if self._log is not None else 0
            self._apply_add(np.asarray(ids, dtype=np.int64), x, meta, when)
        return ids

    def remove(self, item_id: int) -> dict[str, Any]:
        """Delete gallery item ``item_id`` (vector and metadata); returns its metadata."""
        item_id = int(item_id)
        with self.lock:
            if item_id not in self._items:
                raise GalleryItemError(
                    f"no gallery item with id {item_id}; the gallery holds {len(self)} items"
                )
            if self._log is not None:
                self._log.append([{"seq": self._seq + 1, "op": "remove", "id": item_id}])
                self._seq += 1
            return self._apply_remove(item_id)

    def _apply_add(self, ids: np.ndarray, x: np.ndarray, meta: list[dict], when: str) -> None:
        if len(ids) == 0:
            return
        self._index.add_with_ids(x, ids)
        for i, m in zip(ids.tolist(), meta, strict=True):
            self._items[i] = m
        self._ids = np.concatenate([self._ids, ids])
        self._cams = np.concatenate([self._cams, [m["camid"] for m in meta]]).astype(np.int64)
        self.manifest.next_id = max(self.manifest.next_id, int(ids.max()) + 1)
        self.manifest.last_added = when

    def _apply_remove(self, item_id: int) -> dict[str, Any]:
        item = self._items.pop(item_id)
        row = int(np.flatnonzero(self._ids == item_id)[0])
        if self.manifest.kind == "hnsw":
            # faiss cannot unlink an HNSW node: erase its vector (zeros) and skip its id.
            faiss = _faiss()
            hnsw = faiss.downcast_index(self._index.index)
            storage = faiss.downcast_index(hnsw.storage)
            rows = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.manifest.dim)
            rows.reshape(storage.ntotal, self.manifest.dim)[row] = 0.0
            self._erased.add(item_id)
        else:
            self._index.remove_ids(np.array([item_id], dtype=np.int64))
            self._ids = np.delete(self._ids, row)
            self._cams = np.delete(self._cams, row)
        return item

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.manifest.kind!r}, size={len(self)}, "
            f"dim={self.manifest.dim})"
        )

    @property
    def ids(self) -> list[int]:
        """The gallery ids, in order of addition."""
        return list(self._items)

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """Every item's metadata, in order of addition (ids: :attr:`ids`)."""
        return list(self._items.values())

    def item(self, item_id: int) -> dict[str, Any]:
        """The metadata of gallery item ``item_id``."""
        try:
            return self._items[int(item_id)]
        except KeyError:
            raise GalleryItemError(
                f"no gallery item with id {item_id}; the gallery holds {len(self)} items"
            ) from None

    def items_of(self, ids: Any) -> dict[int, dict[str, Any]]:
        """``{id: metadata}`` of those ``ids`` still in the gallery (-1, removed: left out)."""
        with self.lock:
            return {i: self._items[i] for i in np.asarray(ids).ravel().tolist() if i in self._items}

    # ------------------------------------------------------------------ searching

    def _search_group(self, x: np.ndarray, k: int, cameras: set[int]):
        """One faiss search of queries that share the same excluded gallery cameras."""
        faiss = _faiss()
        excluded = self._ids[np.isin(self._cams, list(cameras))] if cameras else self._ids[:0]
        if self._erased:
            excluded = np.union1d(excluded, np.fromiter(self._erased, np.int64))
        if len(excluded) == 0:
            # No selector: flat search then takes faiss's BLAS path (a selector forces its
            # one-query-at-a-time path, docs/deploy.md "faiss flat and numpy").
            return self._index.search(
                x, k, params=_search_params(self.manifest.kind, self.manifest.params)
            )
        batch = faiss.IDSelectorBatch(excluded.astype(np.int64))
        selector = faiss.IDSelectorNot(batch)  # keeps the items *not* in the batch
        params = _search_params(self.manifest.kind, self.manifest.params, selector)
        return self._index.search(x, k, params=params)

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        query_camids: Sequence[int] | None = None,
        exclude_cameras: Mapping[int, set[int] | Sequence[int]] | None = None,
        model: Mapping[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of each query.

        Args:
            queries: ``(Q, D)`` L2-normalised embeddings.
            k: results per query.
            query_camids: each query's camera (needed for ``exclude_cameras``).
            exclude_cameras: query camera -> gallery cameras it must not return
                (SYSU-MM01: ``{3: {2}}``); ``None``: the manifest's rule, if any.
            model: ``{"run", "weights"}`` of the model that embedded the queries; refused
                when it is not the index's.

        Returns:
            ``(distances, ids)``, each ``(Q, k)``: cosine distances ``1 - cos`` nearest
            first, and gallery ids (:meth:`item`); ``inf`` and ``-1`` where fewer than ``k``
            items remain.
        """
        x = prepare_queries(self, queries, k, model)
        exclude = self.default_exclusion(query_camids, exclude_cameras)
        groups = camera_groups(len(x), query_camids, exclude)
        sims = np.full((len(x), k), -np.inf, dtype=np.float32)
        indices = np.full((len(x), k), -1, dtype=np.int64)
        with self.lock:
            for cameras, rows in groups.items():
                sims[rows], indices[rows] = self._search_group(x[rows], k, set(cameras))
        distances = np.where(indices >= 0, 1.0 - sims, np.inf).astype(np.float32)
        return distances, indices

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``metadata.json`` and ``manifest.json`` into ``folder``.

        Saving into the folder whose addition log this index writes empties the log: the
        three files now hold everything it recorded.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            blob = _faiss().serialize_index(self._index)
            self.manifest.wal_seq = self._seq
            write_atomic(folder / "index.faiss", np.asarray(blob).tobytes())
            items = [{"id": i, **m} for i, m in self._items.items()]
            write_atomic(folder / "metadata.json", json.dumps(items).encode())
            write_atomic(
                folder / "manifest.json", json.dumps(asdict(self.manifest), indent=2).encode()
            )
            if self._log is not None and self._log.path.parent.resolve() == folder.resolve():
                self._log.clear()
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, writable: bool = False) -> GalleryIndex:
        """Read an index folder written by :meth:`save`, replaying its addition log.

        Args:
            folder: the index folder.
            writable: log every later :meth:`add` and :meth:`remove` to the folder's
                ``additions.wal`` (fsynced) so that they survive a crash.
        """
        folder = Path(folder)
        manifest, raw_items = read_manifest_and_items(folder, FILES)
        try:
            raw = np.frombuffer((folder / "index.faiss").read_bytes(), dtype=np.uint8)
            index = _faiss().deserialize_index(raw)
        except (ValueError, TypeError, RuntimeError) as err:
            raise IndexFolderError(
                f"the index in {str(folder)!r} is corrupt ({err}); rebuild it with "
                "`csetgraph index`"
            ) from err
        if not 1 <= manifest.version <= FORMAT_VERSION:
            raise IndexFolderError(
                f"{str(folder)!r} holds an index of format version {manifest.version}; this "
                f"csetgraph reads versions 1 to {FORMAT_VERSION}: rebuild it with `csetgraph index`"
            )
        items = _items_from_file(folder, raw_items)
        faiss_ids = None
        if manifest.kind != "ivf":
            index = _with_ids(index, manifest.kind, index.ntotal)
            faiss_ids = _faiss().vector_to_array(index.id_map).astype(np.int64)
        known = set(items) <= set(faiss_ids.tolist()) if faiss_ids is not None else True
        extra_ok = manifest.kind == "hnsw" or index.ntotal == len(items)
        if index.d != manifest.dim or not known or not extra_ok:
            raise IndexFolderError(
                f"{str(folder)!r}: index.faiss ({index.ntotal} x {index.d}) does not match "
                f"metadata.json ({len(items)} items) and manifest.json (dim {manifest.dim}); "
                "rebuild it with `csetgraph index`"
            )
        gallery = cls(index, items, manifest, faiss_ids)
        replayed = gallery._replay(folder / WAL_NAME)
        if writable:
            gallery._log = AdditionLog(folder / WAL_NAME)
            gallery._log.open()
            if replayed:  # fold the log into a new snapshot, so it never grows without bound
                gallery.save(folder)
        return gallery

    def _replay(self, path: Path) -> int:
        """Apply the log's records after the snapshot; returns how many there were."""
        records, _ = AdditionLog.read(path)
        held = set(self._ids.tolist())
        for record in records:
            seq = int(record["seq"])
            if seq <= self.manifest.wal_seq:
                continue
            item_id = int(record["id"])
            if record["op"] == "add" and item_id not in held and item_id not in self._items:
                vector = decode_vector(record["vector"])[None]
                self._apply_add(np.array([item_id]), vector, [record["item"]], record["time"])
                held.add(item_id)
            elif record["op"] == "remove" and item_id in self._items:
                self._apply_remove(item_id)
            self._seq = max(self._seq, seq)
        return sum(int(r["seq"]) > self.manifest.wal_seq for r in records)

    def close(self) -> None:
        """Close the addition log (nothing else is held open)."""
        if self._log is not None:
            self._log.close()


class GalleryItemError(UserError, KeyError):
    """A gallery id that is not (or no longer) in the gallery."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def read_manifest_and_items(folder: Path, files: Sequence[str]):
    """``manifest.json`` and ``metadata.json`` of an index folder (the raw item list)."""
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise IndexFolderError(
            f"{str(folder)!r} is not a gallery index (missing {', '.join(missing)}); "
            "build one with `csetgraph index RUN --output DIR`"
        )
    try:
        manifest = IndexManifest(**json.loads((folder / "manifest.json").read_text()))
        items = (
            json.loads((folder / "metadata.json").read_text()) if "metadata.json" in files else []
        )
    except (ValueError, TypeError) as err:
        raise IndexFolderError(
            f"the index in {str(folder)!r} is corrupt ({err}); rebuild it with `csetgraph index`"
        ) from err
    if not isinstance(items, list):
        raise IndexFolderError(
            f"{str(folder / 'metadata.json')!r} is not a list of items; rebuild the index with "
            "`csetgraph index`"
        )
    return manifest, items


def _items_from_file(folder: Path, raw: list) -> dict[int, dict[str, Any]]:
    """metadata.json's items by id (version 1 files have no ids: an item's id is its row)."""
    items = {}
    for row, entry in enumerate(raw):
        try:
            item = check_item(entry, f"metadata.json item {row}")
        except IndexMismatchError as err:
            raise IndexFolderError(
                f"{str(folder)!r}: {err}; fix the file or rebuild the index with `csetgraph index`"
            ) from None
        item_id = int(item.pop("id", row))
        items[item_id] = item
    return items
