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

A saved index is a folder::

    index.faiss     the faiss index
    metadata.json   one dict per gallery item: path, pid, camid, modality, ...
    manifest.json   kind, params, feature width, the model (run folder and weights
                    fingerprint), the preprocessing, the open-set threshold

This module needs numpy and faiss only: it never imports the model or the engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csetgraph.errors import ConfigError, IndexFolderError, IndexMismatchError, missing_dependency
from csetgraph.files import write_atomic

KINDS = ("flat", "ivf", "hnsw")
REQUIRED_KEYS = ("path", "pid", "camid", "modality")
FILES = ("index.faiss", "metadata.json", "manifest.json")
FORMAT_VERSION = 1
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
    version: int = FORMAT_VERSION

    def camera_rule(self) -> dict[int, set[int]]:
        return {int(q): set(g) for q, g in self.exclude_cameras.items()}


def _check_features(features: Any, what: str) -> np.ndarray:
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


def _check_metadata(metadata: Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(metadata) != n:
        raise IndexMismatchError(f"{n} feature rows but {len(metadata)} metadata entries")
    out = []
    for i, item in enumerate(metadata):
        missing = [k for k in REQUIRED_KEYS if k not in item]
        if missing:
            raise IndexMismatchError(f"metadata[{i}] lacks {missing}; each needs {REQUIRED_KEYS}")
        out.append({**item, "pid": int(item["pid"]), "camid": int(item["camid"])})
    return out


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
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        nlist = int(params["nlist"])
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # faiss's Python wrapper keeps the quantizer alive with the index.
        index.train(_ivf_training_sample(train, nlist))
        return index
    index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(params["ef_construction"])
    return index


def _search_params(kind: str, params: Mapping[str, int], selector=None):
    faiss = _faiss()
    if kind == "ivf":
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(params["nprobe"]))
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(params["ef_search"]))
    return faiss.SearchParameters(sel=selector)


class GalleryIndex:
    """Embeddings of a gallery, their metadata and the manifest of how they were made.

    Build one with :meth:`build` or :meth:`load`, never with the constructor.

    Example::

        index = GalleryIndex.build(features, metadata, kind="hnsw")
        distances, indices = index.search(queries, k=10, query_camids=[3, 3],
                                          exclude_cameras={3: {2}})
        index.save("gallery/")

    Shapes:
        - features: ``(N, D)`` float32, L2-normalised.
        - queries: ``(Q, D)``; distances and indices: ``(Q, k)``.
    """

    def __init__(self, faiss_index, metadata: list[dict[str, Any]], manifest: IndexManifest):
        self._index = faiss_index
        self.metadata = metadata
        self.manifest = manifest
        # Gallery cameras as one array: camera exclusion looks them up on every search.
        self._camids = np.fromiter((m["camid"] for m in metadata), np.int64, len(metadata))

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
            params: overrides of :func:`default_params` (``nlist``, ``nprobe``, ``M``, ...).
        """
        x = _check_features(features, "gallery features")
        meta = _check_metadata(metadata, len(x))
        if len(x) == 0:
            raise IndexMismatchError("the gallery is empty: there is nothing to index")
        chosen = default_params(kind, len(x))
        unknown = set(params) - set(chosen)
        if unknown:
            raise ConfigError(
                f"{kind} index takes {sorted(chosen) or 'no parameters'}, not {sorted(unknown)}"
            )
        chosen.update({k: int(v) for k, v in params.items()})
        index = _new_faiss_index(kind, x.shape[1], chosen, x)
        index.add(x)
        manifest = IndexManifest(
            kind=kind,
            dim=int(x.shape[1]),
            params=chosen,
            model=dict(model or {}),
            preprocess=dict(preprocess or {}),
            threshold=threshold,
        )
        return cls(index, meta, manifest)

    def add(self, features: Any, metadata: Sequence[Mapping[str, Any]]) -> None:
        """Append gallery items; their indices continue after the existing ones."""
        x = _check_features(features, "added features")
        self._check_width(x.shape[1], "added features")
        meta = _check_metadata(metadata, len(x))
        self._index.add(x)
        self.metadata.extend(meta)
        self._camids = np.concatenate([self._camids, [m["camid"] for m in meta]])

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.manifest.kind!r}, size={len(self)}, "
            f"dim={self.manifest.dim})"
        )

    # ------------------------------------------------------------------ searching

    def _check_width(self, dim: int, what: str) -> None:
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

    def _excluded_ids(self, cameras: set[int]) -> np.ndarray:
        return np.flatnonzero(np.isin(self._camids, list(cameras))).astype(np.int64)

    def _search_group(self, x: np.ndarray, k: int, cameras: set[int]):
        """One faiss search of queries that share the same excluded gallery cameras."""
        faiss = _faiss()
        if not cameras:
            return self._index.search(
                x, k, params=_search_params(self.manifest.kind, self.manifest.params)
            )
        batch = faiss.IDSelectorBatch(self._excluded_ids(cameras))
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
            ``(distances, indices)``, each ``(Q, k)``: cosine distances ``1 - cos`` nearest
            first, and rows of :attr:`metadata`; ``inf`` and ``-1`` where fewer than ``k``
            items remain.
        """
        self.check_model(model)
        x = np.asarray(queries, dtype=np.float32)
        if x.ndim == 2:
            self._check_width(x.shape[1], "query features")
        x = _check_features(x, "query features")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if exclude_cameras is None:
            exclude_cameras = self.manifest.camera_rule() if query_camids is not None else {}
        groups = self._camera_groups(len(x), query_camids, exclude_cameras)
        sims = np.full((len(x), k), -np.inf, dtype=np.float32)
        indices = np.full((len(x), k), -1, dtype=np.int64)
        for cameras, rows in groups.items():
            sims[rows], indices[rows] = self._search_group(x[rows], k, set(cameras))
        distances = np.where(indices >= 0, 1.0 - sims, np.inf).astype(np.float32)
        return distances, indices

    @staticmethod
    def _camera_groups(
        n: int, query_camids: Sequence[int] | None, exclude: Mapping[int, Any]
    ) -> dict[tuple[int, ...], np.ndarray]:
        """Query rows grouped by the gallery cameras they exclude (one faiss call per group)."""
        if not exclude:
            return {(): np.arange(n)}
        if query_camids is None or len(query_camids) != n:
            raise ConfigError("exclude_cameras needs query_camids: one camera per query")
        keys = [tuple(sorted(exclude.get(int(c), ()))) for c in query_camids]
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, key in enumerate(keys):
            groups.setdefault(key, []).append(row)
        return {key: np.asarray(rows) for key, rows in groups.items()}

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``metadata.json`` and ``manifest.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        blob = _faiss().serialize_index(self._index)
        write_atomic(folder / "index.faiss", np.asarray(blob).tobytes())
        write_atomic(folder / "metadata.json", json.dumps(self.metadata).encode())
        write_atomic(folder / "manifest.json", json.dumps(asdict(self.manifest), indent=2).encode())
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> GalleryIndex:
        """Read an index folder written by :meth:`save`."""
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise IndexFolderError(
                f"{str(folder)!r} is not a gallery index (missing {', '.join(missing)}); "
                "build one with `csetgraph index RUN --output DIR`"
            )
        try:
            manifest = IndexManifest(**json.loads((folder / "manifest.json").read_text()))
            metadata = json.loads((folder / "metadata.json").read_text())
            raw = np.frombuffer((folder / "index.faiss").read_bytes(), dtype=np.uint8)
            index = _faiss().deserialize_index(raw)
        except (ValueError, TypeError, RuntimeError) as err:
            raise IndexFolderError(
                f"the index in {str(folder)!r} is corrupt ({err}); rebuild it with "
                "`csetgraph index`"
            ) from err
        if manifest.version != FORMAT_VERSION:
            raise IndexFolderError(
                f"{str(folder)!r} holds an index of format version {manifest.version}; this "
                f"csetgraph reads version {FORMAT_VERSION}: rebuild it with `csetgraph index`"
            )
        if index.ntotal != len(metadata) or index.d != manifest.dim:
            raise IndexFolderError(
                f"{str(folder)!r}: index.faiss ({index.ntotal} x {index.d}) does not match "
                f"metadata.json ({len(metadata)} items) and manifest.json (dim {manifest.dim}); "
                "rebuild it with `csetgraph index`"
            )
        return cls(index, metadata, manifest)
