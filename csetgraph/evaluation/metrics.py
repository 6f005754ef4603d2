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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PROTOCOLS", "RankMetrics", "pairwise_distance", "rank_metrics"]

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


def _distance_chunk(distmat, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Rows ``start:stop`` of ``distmat`` as a floating tensor on ``device``.

    Slicing a ``np.memmap`` only reads those rows, so a distance matrix larger than RAM
    can be evaluated chunk by chunk.
    """
    if isinstance(distmat, torch.Tensor):
        chunk = distmat[start:stop]
    else:
        rows = np.ascontiguousarray(distmat[start:stop])
        if not rows.flags.writeable:
            # torch wants writable memory (read-only memmaps); copying one chunk is cheap.
            rows = rows.copy()
        chunk = torch.from_numpy(rows)
    if not chunk.is_floating_point():
        # Integer distances are exact in float64, so ties stay ties.
        chunk = chunk.to(torch.float64)
    elif chunk.dtype in (torch.float16, torch.bfloat16):
        # Up-casting is exact (order and ties preserved) and every backend sorts float32.
        chunk = chunk.to(torch.float32)
    if torch.isnan(chunk).any():
        bad = start + int(torch.isnan(chunk).any(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"distmat contains NaN (first in query row {bad}); NaN distances cannot be "
            "ranked. Check the features for NaN/inf before computing distances."
        )
    return chunk


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
    vectorised over queries and processed in chunks of ``chunk_size`` query rows, so the
    working memory is ``O(chunk_size * G)`` beyond the inputs. It runs with torch on the
    device of ``distmat`` when that is a tensor (CPU or CUDA), and with torch on the CPU
    for numpy input (including ``np.memmap``, which is read chunk by chunk).

    Args:
        distmat: Distances, smaller = closer; numpy array, ``np.memmap`` or torch tensor.
            ``+inf`` is allowed (ranked last); NaN is an error.
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
    num_q, num_g = (int(s) for s in distmat.shape)
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
    device = distmat.device if isinstance(distmat, torch.Tensor) else torch.device("cpu")

    # Identities as compact codes 0..P-1 over the gallery; a query whose identity is
    # absent from the gallery gets -1 (it can never match and is counted as invalid).
    g_uniq, g_code = np.unique(g_pids, return_inverse=True)
    pos = np.clip(np.searchsorted(g_uniq, q_pids), 0, len(g_uniq) - 1)
    q_code = np.where(g_uniq[pos] == q_pids, pos, -1)
    num_ids = len(g_uniq)

    # Per-protocol removal masks are built from these small per-item vectors.
    if protocol == "sysu":
        q_flag = torch.as_tensor(q_camids == 3, device=device)  # queries that drop ...
        g_flag = torch.as_tensor(g_camids == 2, device=device)  # ... these gallery items
    elif protocol == "llcm":
        _, cam_code = np.unique(np.concatenate([q_camids, g_camids]), return_inverse=True)
        q_cam = torch.as_tensor(cam_code[:num_q].astype(np.int64), device=device)
        g_cam = torch.as_tensor(cam_code[num_q:].astype(np.int64), device=device)

    q_code_t = torch.as_tensor(q_code.astype(np.int64), device=device)
    g_code_t = torch.as_tensor(g_code.reshape(-1).astype(np.int64), device=device)
    step = _chunk_rows(num_q, num_g, chunk_size)
    dedup = protocol in ("sysu", "llcm")

    # first_rank[i]: 1-based rank of query i's first true match in the (deduplicated for
    # sysu/llcm) filtered list; 0 for invalid queries. ap / inp: per query, NaN if invalid.
    first_rank = np.zeros(num_q, dtype=np.int64)
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    positions = torch.arange(num_g, device=device)
    for start in range(0, num_q, step):
        stop = min(start + step, num_q)
        dist = _distance_chunk(distmat, start, stop, device)  # (C, G)
        order = torch.sort(dist, dim=1, stable=True).indices  # (C, G)
        del dist
        ranked_code = g_code_t[order]  # (C, G) identity code of each ranked item
        qc = q_code_t[start:stop, None]  # (C, 1)
        if protocol == "sysu":
            keep = ~(q_flag[start:stop, None] & g_flag[order])
        elif protocol == "llcm":
            keep = ~((ranked_code == qc) & (g_cam[order] == q_cam[start:stop, None]))
        else:
            keep = torch.ones_like(order, dtype=torch.bool)
        match = (ranked_code == qc) & keep  # (C, G)
        n_match = match.sum(dim=1)
        valid = n_match > 0

        # 1-based rank of each item within the filtered list (removed items just do not
        # advance the counter, and are excluded by `match` below).
        filt_rank = torch.cumsum(keep, dim=1)  # (C, G)
        hits = torch.cumsum(match, dim=1)  # true matches up to each position
        precision = hits.to(torch.float64) / filt_rank.clamp(min=1).to(torch.float64)
        ap_sum = torch.where(match, precision, 0.0).sum(dim=1)
        last = torch.where(match, filt_rank, 0).amax(dim=1)
        n_f = n_match.to(torch.float64)
        ap_c = torch.where(valid, ap_sum / n_f.clamp(min=1), torch.nan)
        inp_c = torch.where(valid, n_f / last.clamp(min=1).to(torch.float64), torch.nan)

        if dedup:
            # Best (smallest) ranked position of each identity among kept items; the
            # query's identity lands, in the deduplicated list, after every identity
            # whose best position comes before its own.
            masked_pos = torch.where(keep, positions, num_g)  # (C, G)
            best = torch.full((stop - start, num_ids), num_g, device=device, dtype=torch.long)
            best.scatter_reduce_(1, ranked_code, masked_pos, reduce="amin")  # (C, P)
            own = best.gather(1, qc.clamp(min=0))  # (C, 1)
            rank_c = (best < own).sum(dim=1) + 1
        else:
            rank_c = torch.where(match, filt_rank, num_g + 1).amin(dim=1)
        rank_c = torch.where(valid, rank_c, 0)

        first_rank[start:stop] = rank_c.cpu().numpy()
        ap[start:stop] = ap_c.cpu().numpy()
        inp[start:stop] = inp_c.cpu().numpy()

    valid = first_rank > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"no query has a true match in the gallery under protocol {protocol!r} "
            f"({num_q} queries); check that query and gallery share identities"
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
        num_invalid_queries=num_q - num_valid,
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
    q = q_feats.detach() if is_torch else torch.from_numpy(np.asarray(q_feats))
    g = g_feats.detach() if is_torch else torch.from_numpy(np.asarray(g_feats))
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
