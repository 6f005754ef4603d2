"""Ranking metrics (CMC, mAP, mINP) for the SYSU-MM01, RegDB and LLCM protocols.

Pure functions over arrays: they take a query x gallery distance matrix and the
identity / camera labels, and return numbers. Nothing here knows about models or files.

The rules reproduce the community reference code (Ye et al.'s ``eval_sysu`` and
``eval_regdb`` from AGW/DDAG, and DEEN's ``eval_llcm``) with two deliberate differences:

* the ranking uses a *stable* sort of the distances (smaller = closer; ties keep the
  gallery order), so results do not depend on the sort algorithm; ``np.argsort``'s
  default quicksort orders ties arbitrarily;
* a ranked list shorter than ``max_rank`` does not crash: the curve keeps its last value.

Per protocol, for one query with identity ``q_pid`` and camera ``q_cam``:

* ``"sysu"``: if ``q_cam == 3`` every gallery image from camera 2 is removed (cameras 2
  and 3 are in the same room). The CMC is computed on the identity-deduplicated ranked
  list (each gallery identity counted once, at its best-ranked image).
* ``"llcm"``: gallery images with identity ``q_pid`` *and* camera ``q_cam`` are removed;
  identity-deduplicated CMC as for SYSU.
* ``"regdb"``: nothing is removed; plain CMC over images.

In all three, mAP and mINP are computed on the filtered ranked list of images (not
deduplicated). With ``m_1 < ... < m_n`` the 1-based ranks of the ``n`` true matches in
the filtered list::

    AP   = (1 / n) * sum_j  j / m_j          # precision at each true match
    INP  = n / m_n                           # inverse rank of the hardest match
    CMC[r] = 1 if the first true match (of the deduplicated list for SYSU/LLCM)
             is at rank <= r + 1, else 0

Queries without any true match after filtering are skipped and counted; the CMC is
summed over the remaining (valid) queries and divided by their number, and mAP and
mINP are averaged over them.

Implementation: numpy, vectorised over the queries of a chunk (no Python loop over
queries), one chunk of query rows at a time so that the working memory is bounded by the
chunk size whatever the number of queries; torch tensors (CPU or CUDA) are accepted and
copied to the CPU one chunk at a time. The stable ranking of float32 distances sorts
unique 64-bit keys (distance bits, gallery index), which is several times faster than a
stable argsort and gives exactly the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PROTOCOLS", "RankMetrics", "ignored_gallery", "pairwise_distance", "rank_metrics"]

PROTOCOLS = ("sysu", "regdb", "llcm")

# Budget, in matrix elements, for one chunk of queries x gallery. A handful of
# (chunk, G) arrays of at most 8 bytes per element are alive at once, so this keeps a
# chunk's working memory around a few hundred MB at most, whatever the gallery size.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True, eq=False)
class RankMetrics:
    """Result of :func:`rank_metrics`.

    Attributes:
        cmc: Cumulative matching characteristic, float64 array of length ``max_rank``;
            ``cmc[r]`` is the fraction of valid queries whose first true match is within
            the top ``r + 1``.
        mAP: Mean average precision over valid queries, in [0, 1].
        mINP: Mean inverse negative penalty over valid queries, in [0, 1].
        num_valid_queries: Queries with at least one true match after filtering.
        num_invalid_queries: Queries without a true match after filtering (skipped).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_invalid_queries: int

    @property
    def max_rank(self) -> int:
        """Length of the CMC curve."""
        return len(self.cmc)

    def as_dict(self) -> dict[str, float]:
        """Return ``rank1``/``rank5``/``rank10``/``rank20`` (those <= max_rank), mAP, mINP.

        Values are fractions in [0, 1] (multiply by 100 for the papers' percentages).
        """
        out = {f"rank{r}": float(self.cmc[r - 1]) for r in (1, 5, 10, 20) if r <= self.max_rank}
        out["mAP"] = float(self.mAP)
        out["mINP"] = float(self.mINP)
        return out


def ignored_gallery(protocol: str, q_pids, q_camids, g_pids, g_camids) -> np.ndarray:
    """The protocol's ignore rule: which gallery items each query must not see.

    The one place the rule is written; :func:`rank_metrics` and the ranked-list figure
    (:mod:`csetgraph.visualization.ranked`) both use it.

    * ``"sysu"``: a query from camera 3 ignores every camera-2 image (same room);
    * ``"llcm"``: a query ignores the images of its own identity *and* camera;
    * ``"regdb"``: nothing is ignored (cameras may be ``None``).

    Args:
        protocol: ``"sysu"``, ``"regdb"`` or ``"llcm"``.
        q_pids, q_camids: labels of the queries (scalars for one query, or 1-D arrays).
        g_pids, g_camids: labels of the gallery items (1-D arrays).

    Returns:
        Boolean mask, ``True`` = removed from that query's ranked list.

    Shapes:
        q_*: ``(Q,)`` (or scalars: ``Q = 1`` dropped); g_*: ``(G,)``; output ``(Q, G)``
        (``(G,)`` for scalar query labels).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    g_pids = np.asarray(g_pids)
    scalar = np.ndim(q_pids) == 0
    q_pids = np.atleast_1d(np.asarray(q_pids))[:, None]  # (Q, 1)
    if protocol == "regdb":
        out = np.zeros((len(q_pids), len(g_pids)), dtype=bool)
    else:
        q_cams = np.atleast_1d(np.asarray(q_camids))[:, None]  # (Q, 1)
        g_cams = np.asarray(g_camids)[None, :]  # (1, G)
        if protocol == "sysu":
            out = (q_cams == 3) & (g_cams == 2)
        else:  # llcm
            out = (q_pids == g_pids[None, :]) & (q_cams == g_cams)
    return out[0] if scalar else out


def _labels_to_numpy(x, name: str) -> np.ndarray:
    """Bring a label vector (numpy, torch on any device, or a sequence) to a 1-D numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {x.shape}")
    return x


def _check_max_rank(max_rank) -> None:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")


def _chunk_rows(num_rows: int, num_cols: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(1, min(num_rows, _CHUNK_ELEMENTS // max(num_cols, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    return int(chunk_size)


def _distance_chunk(distmat, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``distmat`` as a float32 or float64 numpy array.

    Slicing a ``np.memmap`` only reads those rows, and a tensor chunk is copied to the
    CPU alone, so a distance matrix larger than RAM (or on a GPU) is handled chunk by chunk.
    """
    if isinstance(distmat, torch.Tensor):
        chunk = distmat[start:stop].detach().cpu()
        if chunk.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 is exact
            chunk = chunk.float()
        chunk = chunk.numpy()
    else:
        chunk = np.asarray(distmat[start:stop])
    if chunk.dtype == np.float16:
        chunk = chunk.astype(np.float32)  # exact: order and ties are preserved
    elif chunk.dtype not in (np.float32, np.float64):
        chunk = chunk.astype(np.float64)  # integers up to 2**53 are exact in float64
    nan_rows = np.isnan(chunk).any(axis=1)
    if nan_rows.any():
        raise ValueError(
            f"distmat contains NaN (first in query row {start + int(np.argmax(nan_rows))}); "
            "NaN distances cannot be ranked. Check the features for NaN/inf before "
            "computing distances."
        )
    return chunk


def _stable_order(dist: np.ndarray) -> np.ndarray:
    """Per-row ranking of ``dist`` (ascending, ties in column order) as int64 indices.

    A stable argsort, computed faster for float32: each distance is mapped to an unsigned
    integer with the same order (flip all bits of negatives, set the sign bit of the
    others), shifted into the high 32 bits of a uint64 whose low 32 bits hold the column
    index. The keys are then unique, so an ordinary (SIMD) sort gives exactly the stable
    order, and the indices are read back from the low bits.

    Shapes:
        dist: ``(C, G)``; output ``(C, G)``.
    """
    if dist.dtype == np.float64:
        as32 = dist.astype(np.float32)
        if not np.array_equal(as32, dist):
            return np.argsort(dist, axis=1, kind="stable")
        dist = as32
    # + 0.0 turns -0.0 into +0.0, which compare equal but differ in bits.
    bits = (dist + np.float32(0.0)).view(np.int32)
    # Arithmetic shift: -1 for negatives (flip every bit), 0 otherwise (flip the sign bit).
    flip = (bits >> 31) | np.int32(-(2**31))
    keys = (bits ^ flip).view(np.uint32).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(dist.shape[1], dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def rank_metrics(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    protocol: str,
    max_rank: int = 20,
    chunk_size: int | None = None,
) -> RankMetrics:
    """CMC, mAP and mINP of a query x gallery distance matrix under a VI-ReID protocol.

    See the module docstring for the exact rules of each protocol. The computation is
    vectorised over queries (numpy) and processed in chunks of ``chunk_size`` query rows,
    so the working memory is ``O(chunk_size * G)`` beyond the inputs. ``distmat`` may be
    a numpy array, an ``np.memmap`` (read chunk by chunk, so it may exceed RAM) or a
    torch tensor on any device (each chunk is copied to the CPU).

    Args:
        distmat: Distances, smaller = closer. ``+inf`` is allowed (ranked last); NaN is
            an error.
        q_pids: Query identities, any integer (or sortable) labels.
        g_pids: Gallery identities.
        q_camids: Query cameras (integers; SYSU-MM01 uses 1..6). May be ``None`` for
            ``"regdb"``, which ignores cameras.
        g_camids: Gallery cameras; may be ``None`` for ``"regdb"``.
        protocol: ``"sysu"``, ``"regdb"`` or ``"llcm"``.
        max_rank: Length of the CMC curve.
        chunk_size: Query rows per chunk; ``None`` picks about 4M matrix elements per chunk.

    Returns:
        A :class:`RankMetrics`.

    Raises:
        ValueError: unknown protocol, mismatched shapes, empty query or gallery set,
            NaN distances, or no query with a true match.

    Shapes:
        distmat: ``(Q, G)``; q_pids, q_camids: ``(Q,)``; g_pids, g_camids: ``(G,)``;
        cmc: ``(max_rank,)``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    _check_max_rank(max_rank)
    if not isinstance(distmat, (torch.Tensor, np.ndarray)):
        distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(
            f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(distmat.shape)}"
        )
    labels = _check_labels(tuple(int(x) for x in distmat.shape), q_pids, g_pids, q_camids,
                           g_camids, protocol)  # fmt: skip
    num_q, num_g = labels.num_query, labels.num_gallery
    step = _chunk_rows(num_q, num_g, chunk_size)
    # first_rank[i]: 1-based rank of query i's first true match in its (identity-
    # deduplicated for sysu/llcm) filtered list, 0 for invalid queries; ap / inp per query.
    first_rank = np.zeros(num_q, dtype=np.int64)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    for start in range(0, num_q, step):
        stop = min(start + step, num_q)
        order = _stable_order(_distance_chunk(distmat, start, stop))  # (C, G)
        chunk = slice(start, stop)
        first_rank[chunk], ap[chunk], inp[chunk] = _score_chunk(order, labels, chunk, protocol)
        del order  # at most one chunk's (C, G) arrays are alive at a time
    return _summarise(first_rank, ap, inp, max_rank, protocol)


@dataclass(frozen=True, eq=False)
class _Labels:
    """Checked labels: identities coded 0..P-1 over the gallery (-1: absent from it)."""

    q_code: np.ndarray  # (Q,)
    g_code: np.ndarray  # (G,)
    q_cams: np.ndarray  # (Q,)
    g_cams: np.ndarray  # (G,)
    by_id: np.ndarray  # (G,) gallery columns grouped by identity
    id_starts: np.ndarray  # (P,) where each identity's group starts in by_id

    @property
    def num_query(self) -> int:
        return len(self.q_code)

    @property
    def num_gallery(self) -> int:
        return len(self.g_code)


def _check_labels(shape, q_pids, g_pids, q_camids, g_camids, protocol: str) -> _Labels:
    """Labels as numpy arrays of the right lengths, identities coded (see :class:`_Labels`)."""
    num_q, num_g = shape
    q_pids = _labels_to_numpy(q_pids, "q_pids")
    g_pids = _labels_to_numpy(g_pids, "g_pids")
    if len(q_pids) != num_q or len(g_pids) != num_g:
        raise ValueError(
            f"distmat has shape {(num_q, num_g)} but there are {len(q_pids)} query and "
            f"{len(g_pids)} gallery labels; rows must be queries and columns gallery items"
        )
    if num_q == 0:
        raise ValueError("the query set is empty; nothing to evaluate")
    if num_g == 0:
        raise ValueError("the gallery is empty; every query needs at least one gallery item")
    if protocol == "regdb" and q_camids is None and g_camids is None:
        q_camids = np.zeros(num_q, dtype=np.int64)
        g_camids = np.zeros(num_g, dtype=np.int64)
    if q_camids is None or g_camids is None:
        raise ValueError(f"protocol {protocol!r} needs q_camids and g_camids")
    q_camids = _labels_to_numpy(q_camids, "q_camids")
    g_camids = _labels_to_numpy(g_camids, "g_camids")
    if len(q_camids) != num_q or len(g_camids) != num_g:
        raise ValueError(
            f"q_camids has {len(q_camids)} entries and g_camids {len(g_camids)}, but there "
            f"are {num_q} queries and {num_g} gallery items"
        )
    # Identities as compact codes 0..P-1 over the gallery; a query whose identity is
    # absent from the gallery gets -1 (it can never match and is counted as invalid).
    g_uniq, g_code = np.unique(g_pids, return_inverse=True)
    g_code = g_code.reshape(-1)
    pos = np.clip(np.searchsorted(g_uniq, q_pids), 0, len(g_uniq) - 1)
    q_code = np.where(g_uniq[pos] == q_pids, pos, -1)
    # Gallery columns grouped by identity, so that a per-identity minimum is one reduceat.
    by_id = np.argsort(g_code, kind="stable")
    id_starts = np.searchsorted(g_code[by_id], np.arange(len(g_uniq)))
    return _Labels(q_code, g_code, q_camids, g_camids, by_id, id_starts)


def _score_chunk(order: np.ndarray, labels: _Labels, chunk: slice, protocol: str):
    """First-match rank, AP and INP of the queries of one chunk, from their ranking.

    Shapes:
        order: ``(C, G)`` gallery indices, best first -> three ``(C,)`` arrays.
    """
    rows, num_g = order.shape
    # Positions fit in int32 for any realistic gallery, halving the memory traffic.
    pos_dtype = np.int32 if num_g < 2**31 - 1 else np.int64
    qc = labels.q_code[chunk, None]  # (C, 1)
    match = labels.g_code[order] == qc  # (C, G), ranked order
    # Removed images, in gallery order (for the deduplication) and in ranked order.
    # Identity codes stand for the pids: equal codes <=> equal pids.
    removed_g = ignored_gallery(
        protocol, labels.q_code[chunk], labels.q_cams[chunk], labels.g_code, labels.g_cams
    )  # (C, G)
    removed = None
    if removed_g.any():
        removed = np.take_along_axis(removed_g, order, axis=1)  # (C, G), ranked order
        match &= ~removed
    # Only true matches matter for AP / INP: handle them as a sparse list. nonzero is
    # row-major, so within a row the matches come in rank order.
    m_row, m_col = np.nonzero(match)
    n_match = np.bincount(m_row, minlength=rows)
    m_rank = m_col + 1
    if removed is not None:  # rank in the filtered list: removed items take no place
        m_rank = m_rank - np.cumsum(removed, axis=1, dtype=pos_dtype)[m_row, m_col]
    row_first = np.cumsum(n_match) - n_match  # index of each row's first match
    j = np.arange(len(m_row)) - row_first[m_row] + 1  # j-th true match of its row
    valid = n_match > 0
    ap, inp, first = np.zeros(rows), np.zeros(rows), np.zeros(rows, dtype=np.int64)
    ap_sum = np.bincount(m_row, weights=j / m_rank, minlength=rows)
    ap[valid] = ap_sum[valid] / n_match[valid]
    inp[valid] = n_match[valid] / m_rank[row_first[valid] + n_match[valid] - 1]
    if protocol == "regdb":
        first[valid] = m_rank[row_first[valid]]
    else:
        first[valid] = _deduplicated_rank(order, labels, qc, removed_g, pos_dtype)[valid]
    return first, ap, inp


def _deduplicated_rank(order, labels: _Labels, qc, removed_g, pos_dtype) -> np.ndarray:
    """Rank of each query's identity in its identity-deduplicated list (SYSU, LLCM CMC).

    The query's identity comes after every identity whose best-ranked kept image comes
    before its own best image.

    Shapes:
        order, removed_g: ``(C, G)``; qc: ``(C, 1)`` -> ``(C,)``.
    """
    num_g = order.shape[1]
    position = np.empty(order.shape, dtype=pos_dtype)
    ranks = np.arange(num_g, dtype=pos_dtype)[None, :]
    np.put_along_axis(position, order, ranks, axis=1)  # (C, G)
    position[removed_g] = num_g  # removed images never count
    best = np.minimum.reduceat(position[:, labels.by_id], labels.id_starts, axis=1)  # (C, P)
    own = np.take_along_axis(best, np.maximum(qc, 0), axis=1)  # (C, 1)
    return (best < own).sum(axis=1) + 1


def _summarise(first_rank, ap, inp, max_rank: int, protocol: str) -> RankMetrics:
    """CMC, mAP and mINP over the valid queries (those with a first-match rank)."""
    valid = first_rank > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"no query has a true match in the gallery under protocol {protocol!r} "
            f"({len(first_rank)} queries); check that query and gallery share identities"
        )
    # A query whose first match is at rank k contributes 1 to cmc[k-1:]; a list shorter
    # than max_rank therefore keeps its last value (1) up to max_rank, as documented.
    hist = np.bincount(np.minimum(first_rank[valid], max_rank + 1) - 1, minlength=max_rank + 1)
    cmc = np.cumsum(hist[:max_rank]).astype(np.float64) / num_valid
    cmc.setflags(write=False)
    return RankMetrics(
        cmc=cmc,
        mAP=float(np.mean(ap[valid])),
        mINP=float(np.mean(inp[valid])),
        num_valid_queries=num_valid,
        num_invalid_queries=len(first_rank) - num_valid,
    )


def pairwise_distance(q_feats, g_feats, metric: str = "cosine", chunk_size: int | None = None):
    """Query x gallery distance matrix.

    * ``"cosine"``: ``1 - cos(q, g)``, in [0, 2]; features are L2-normalised inside (a
      zero vector stays zero, giving distance 1 to everything).
    * ``"euclidean"``: the (non-squared) Euclidean distance ``||q - g||_2``, computed as
      ``sqrt(max(||q||^2 + ||g||^2 - 2 q.g, 0))`` after centring both on the gallery
      mean; in float32 a distance near 0 therefore has an absolute error of about
      ``1e-3 * ||q - mean||`` (use float64 features if that matters).

    Both inputs must be numpy arrays or both torch tensors; the result has the same type
    (a tensor stays on its device) and the features' floating dtype. The work is done in
    chunks of query rows so the temporaries stay ``O(chunk_size * G)``.

    Args:
        q_feats: Query features.
        g_feats: Gallery features.
        metric: ``"cosine"`` or ``"euclidean"``.
        chunk_size: Query rows per chunk; ``None`` picks about 4M elements per chunk.

    Returns:
        Distances, smaller = closer.

    Shapes:
        q_feats: ``(Q, D)``; g_feats: ``(G, D)``; output: ``(Q, G)``.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    is_torch = isinstance(q_feats, torch.Tensor)
    if is_torch != isinstance(g_feats, torch.Tensor):
        raise TypeError(
            "q_feats and g_feats must both be numpy arrays or both torch tensors, got "
            f"{type(q_feats).__name__} and {type(g_feats).__name__}"
        )
    # torch needs writable memory: read-only arrays (memmaps) are copied.
    q = q_feats.detach() if is_torch else torch.from_numpy(np.require(q_feats, requirements="W"))
    g = g_feats.detach() if is_torch else torch.from_numpy(np.require(g_feats, requirements="W"))
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            f"features must be (Q, D) and (G, D) with the same D, got {tuple(q.shape)} "
            f"and {tuple(g.shape)}"
        )
    if q.device != g.device:
        raise ValueError(f"q_feats is on {q.device} but g_feats on {g.device}")
    dtype = torch.promote_types(q.dtype, g.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    q, g = q.to(dtype), g.to(dtype)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    else:
        # Distances are translation invariant; centring on the gallery mean shrinks the
        # norms and so the cancellation error of the ||q||^2 + ||g||^2 - 2 q.g expansion
        # (features after a ReLU share a large common offset).
        centre = g.mean(dim=0, keepdim=True)  # (1, D)
        q, g = q - centre, g - centre
        g_sq = (g * g).sum(dim=1)  # (G,)
    out = torch.empty((q.shape[0], g.shape[0]), dtype=dtype, device=q.device)
    step = _chunk_rows(q.shape[0], g.shape[0], chunk_size)
    for start in range(0, q.shape[0], step):
        qc = q[start : start + step]
        dot = qc @ g.T  # (C, G)
        if metric == "cosine":
            out[start : start + step] = 1.0 - dot
        else:
            sq = (qc * qc).sum(dim=1, keepdim=True) + g_sq[None, :] - 2.0 * dot
            out[start : start + step] = sq.clamp_(min=0).sqrt_()
    return out if is_torch else out.numpy()
