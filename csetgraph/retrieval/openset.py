"""Open-set matching: a distance threshold beyond which a gallery item is "no match".

A gallery may not hold the person asked about. The threshold is chosen on identities the
model never trained on (the validation split) at a target false-match rate (FMR): among all
cross-modality pairs of *different* identities (impostor pairs), at most that fraction may lie
within the threshold. With the ``n`` impostor distances sorted,
:math:`d_{(1)} \\le \\dots \\le d_{(n)}`, and :math:`m = \\lfloor \\mathrm{FMR} \\cdot n \\rfloor`,

.. math::
    t = \\operatorname{nextbelow}\\left(d_{(m+1)}\\right),

the largest distance that accepts exactly the ``m`` nearest impostor pairs (ties at
:math:`d_{(m+1)}` are all rejected, so the measured FMR never exceeds the target). A result
is a match when its distance is ``<= t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from csetgraph.errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    """A threshold and what it was measured on.

    Attributes:
        threshold: the distance ``t``; results with distance ``<= t`` are matches.
        target_fmr: the false-match rate asked for.
        fmr: the false-match rate of ``t`` on the impostor pairs.
        tmr: the true-match rate of ``t`` on the genuine pairs (same identity).
        impostor_pairs: how many impostor pairs were measured.
        genuine_pairs: how many genuine pairs were measured.
    """

    threshold: float
    target_fmr: float
    fmr: float
    tmr: float
    impostor_pairs: int
    genuine_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_threshold(
    query_features: np.ndarray,
    query_pids: np.ndarray,
    gallery_features: np.ndarray,
    gallery_pids: np.ndarray,
    target_fmr: float = 0.01,
) -> Calibration:
    """The cosine-distance threshold with false-match rate ``<= target_fmr``.

    Args:
        query_features: ``(Q, D)`` L2-normalised embeddings of one modality.
        query_pids: ``(Q,)`` their identities.
        gallery_features: ``(G, D)`` L2-normalised embeddings of the other modality.
        gallery_pids: ``(G,)`` their identities.
        target_fmr: the false-match rate to allow, in ``[0, 1)``.
    """
    if not 0.0 <= target_fmr < 1.0:
        raise ConfigError(f"the target false-match rate must be in [0, 1), got {target_fmr}")
    q = np.asarray(query_features, dtype=np.float64)
    g = np.asarray(gallery_features, dtype=np.float64)
    dist = 1.0 - q @ g.T  # (Q, G) cosine distances
    same = np.asarray(query_pids)[:, None] == np.asarray(gallery_pids)[None, :]
    impostor = np.sort(dist[~same])
    genuine = dist[same]
    if impostor.size == 0 or genuine.size == 0:
        raise ConfigError(
            "calibration needs at least two identities seen in both modalities; "
            "use a split with more identities (--calibrate-split)"
        )
    m = int(np.floor(target_fmr * impostor.size))
    threshold = float(np.nextafter(impostor[m], -np.inf)) if m < impostor.size else np.inf
    return Calibration(
        threshold=threshold,
        target_fmr=float(target_fmr),
        fmr=float(np.mean(impostor <= threshold)),
        tmr=float(np.mean(genuine <= threshold)),
        impostor_pairs=int(impostor.size),
        genuine_pairs=int(genuine.size),
    )


def ranked_hits(
    metadata: Mapping[int, dict[str, Any]],
    distances: np.ndarray,
    ids: np.ndarray,
    threshold: float | None = None,
) -> dict[str, Any]:
    """One query's results as the command line and the service report them.

    Args:
        metadata: gallery id -> item (:meth:`GalleryIndex.items_of`); an id missing from it
            (removed since the search) is left out.
        distances: ``(k,)`` distances of one query, nearest first.
        ids: ``(k,)`` gallery ids (-1: no item).
        threshold: the open-set threshold, or ``None``.

    Returns:
        ``{"results": [{"rank", "id", "index", "path", "pid", "camid", "distance", "match"},
        ...], "no_match": bool}``: ``index`` is ``id`` (its name before ids were stable);
        ``match`` is false beyond the threshold, and ``no_match`` is true when the best
        result is beyond it (or there is none).
    """
    results = []
    for d, i in zip(distances.tolist(), ids.tolist(), strict=True):
        if i < 0:
            break
        if i not in metadata:
            continue
        item = metadata[i]
        results.append(
            {
                "rank": len(results) + 1,
                "id": int(i),
                "index": int(i),
                "path": item["path"],
                "pid": int(item["pid"]),
                "camid": int(item["camid"]),
                "distance": float(d),
                "match": threshold is None or d <= threshold,
            }
        )
    no_match = not results or not results[0]["match"]
    return {"results": results, "no_match": no_match}
