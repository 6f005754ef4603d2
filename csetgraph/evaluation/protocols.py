"""Evaluation protocols: feature extraction and the SYSU-MM01, RegDB and LLCM trials.

Features of every image are extracted once (queries once for all trials and modes, each
distinct gallery image once), then each trial's distance matrix is ranked by
:func:`~csetgraph.evaluation.metrics.rank_metrics` under the protocol's rules
(DESIGN.md section 4):

* SYSU-MM01 (:func:`evaluate_sysu`): infrared queries, one visible gallery per trial
  (0-9) and search mode (all / indoor), drawn as the community code does;
* RegDB (:func:`evaluate_regdb`): one trial per model, visible-to-thermal and
  thermal-to-visible, every test image used;
* LLCM (:func:`evaluate_llcm`): IR-to-VIS and VIS-to-IR, one random gallery image per
  identity and camera per trial (0-9).

:func:`evaluate_dataset` dispatches on ``cfg.data.dataset``; the training loop and
``scripts/evaluate.py`` both go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from csetgraph.config import Config
from csetgraph.data.records import DIRECTIONS, Record
from csetgraph.evaluation.features import extract_features
from csetgraph.evaluation.metrics import pairwise_distance, rank_metrics
from csetgraph.evaluation.reranking import k_reciprocal_rerank

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
#: Result keys, in the order the papers report them (the direction vocabulary of
#: :data:`csetgraph.data.records.DIRECTIONS`: "<query>2<gallery>").
REGDB_DIRECTIONS = ("v2i", "i2v")
LLCM_DIRECTIONS = ("i2v", "v2i")


def summarise(trials: list[dict[str, float]]) -> dict:
    """Mean and standard deviation over trials of each metric (fractions in [0, 1])."""
    keys = [k for k in METRIC_KEYS if k in trials[0]]
    return {
        "trials": trials,
        "mean": {k: float(np.mean([t[k] for t in trials])) for k in keys},
        "std": {k: float(np.std([t[k] for t in trials])) for k in keys},
    }


def _check_features(feat: torch.Tensor, records: Sequence[Record], what: str) -> None:
    if not records:
        raise ValueError(
            f"the {what} is empty: no images to rank; check the data set folder and split"
        )
    if feat.shape[0] != len(records):  # pragma: no cover - extract_features invariant
        raise RuntimeError(f"{what}: {feat.shape[0]} features for {len(records)} images")


def _score(
    q_feat: torch.Tensor,
    query: Sequence[Record],
    g_feat: torch.Tensor,
    gallery: Sequence[Record],
    *,
    protocol: str,
    metric: str,
    rerank: bool,
    q_q: torch.Tensor | None = None,
) -> dict[str, float]:
    """Rank one query set against one gallery; the metrics of one trial (fractions).

    With ``rerank`` the distances go through k-reciprocal re-ranking
    (:func:`~csetgraph.evaluation.reranking.k_reciprocal_rerank`, default parameters);
    ``q_q`` is the query x query distance matrix when the caller already has it.
    """
    _check_features(q_feat, query, "query set")
    _check_features(g_feat, gallery, "gallery")
    dist = pairwise_distance(q_feat, g_feat, metric=metric)
    if rerank:
        if q_q is None:
            q_q = pairwise_distance(q_feat, q_feat, metric=metric)
        g_g = pairwise_distance(g_feat, g_feat, metric=metric)
        dist = k_reciprocal_rerank(dist, q_q, g_g)
    m = rank_metrics(
        dist,
        np.array([r.pid for r in query]),
        np.array([r.pid for r in gallery]),
        np.array([r.camid for r in query]),
        np.array([r.camid for r in gallery]),
        protocol=protocol,
    )
    out = m.as_dict()
    out["num_query"] = len(query)
    out["num_gallery"] = len(gallery)
    out["num_invalid_queries"] = m.num_invalid_queries
    return out


def _rows(features: torch.Tensor, pool: Sequence[Record], subset: Sequence[Record]):
    """The rows of ``features`` (computed for ``pool``) that belong to ``subset``."""
    row = {r.path: i for i, r in enumerate(pool)}
    index = torch.tensor([row[r.path] for r in subset], dtype=torch.long, device=features.device)
    return features[index]


def evaluate_sysu(
    model: torch.nn.Module,
    root: str,
    *,
    transform: Callable,
    modes: Sequence[str] = ("all", "indoor"),
    trials: int = 10,
    shots: int = 1,
    gallery: str = "random",
    split: str = "test",
    metric: str = "cosine",
    rerank: bool = False,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    amp: str = "auto",
) -> dict[str, dict]:
    """Infrared-to-visible retrieval on SYSU-MM01 (or the synthetic data set in its layout).

    Query features are extracted once for all modes and trials, and each distinct gallery
    image once (over all modes and trials); each trial's gallery is drawn by
    :func:`csetgraph.data.sysu_mm01.test_split` (``gallery="random"``: the seeded
    community draw, ``shots`` images per id and camera; ``"official"``: the permutations of
    ``rand_perm_cam.mat``), and ranked with ``protocol="sysu"``.

    Returns:
        ``{mode: {"trials": [...], "mean": {...}, "std": {...}, ...}}`` with the metrics of
        :data:`METRIC_KEYS` as fractions.
    """
    from csetgraph.data import sysu_mm01

    kw = dict(
        transform=transform,
        batch_size=batch_size,
        device=device,
        flip=flip,
        num_workers=num_workers,
        progress=progress,
        amp=amp,
    )
    if not modes:
        raise ValueError("modes is empty; pass 'all' and/or 'indoor'")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    perm = None
    if gallery == "official":
        path = sysu_mm01.official_perm_path(root)
        if path is not None:  # a missing file is reported by test_split
            perm = sysu_mm01.load_rand_perm(path)
    query, _ = sysu_mm01.test_split(root, modes[0], 0, shots, split, gallery, perm)
    q_feat = extract_features(model, query, "ir", desc="query (ir)", **kw)
    q_q = pairwise_distance(q_feat, q_feat, metric=metric) if rerank else None
    galleries = {
        mode: [
            sysu_mm01.test_split(root, mode, t, shots, split, gallery, perm)[1]
            for t in range(trials)
        ]
        for mode in modes
    }
    # The indoor galleries' images are among the all-search ones: embed each image once.
    unique = sorted(
        {r.path: r for gs in galleries.values() for g in gs for r in g}.values(),
        key=lambda r: r.path,
    )
    g_feat_all = extract_features(model, unique, "vis", desc="gallery (vis)", **kw)
    results = {}
    for mode in modes:
        per_trial = [
            _score(
                q_feat,
                query,
                _rows(g_feat_all, unique, g),
                g,
                protocol="sysu",
                metric=metric,
                rerank=rerank,
                q_q=q_q,
            )
            for g in galleries[mode]
        ]
        results[mode] = {
            **summarise(per_trial),
            "protocol": "sysu",
            "query": "ir",
            "gallery": "vis",
        }
    return results


def evaluate_regdb(
    model: torch.nn.Module,
    root: str,
    *,
    transform: Callable,
    trial: int = 1,
    split: str = "test",
    metric: str = "cosine",
    rerank: bool = False,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    amp: str = "auto",
) -> dict[str, dict]:
    """Visible-to-thermal (``"v2i"``) and thermal-to-visible (``"i2v"``) retrieval on RegDB.

    One trial only: the RegDB protocol trains one model per trial (``data.trial``, 1-10)
    and tests it on that trial's test split; average the ten runs' results afterwards
    (``scripts/evaluate.py`` does it when given the ten run folders). Every test image
    of one modality is a query and every image of the other the gallery; nothing is
    dropped (``protocol="regdb"``). Each image's features are extracted once and serve
    both directions. ``split="val"`` evaluates on the held-out training identities
    (:func:`csetgraph.data.regdb.val_ids`) for model selection.

    Returns:
        ``{"v2i": {...}, "i2v": {...}}``, each as :func:`summarise` (one trial) plus
        ``"trial"``, ``"protocol"`` and the query and gallery modalities.
    """
    from csetgraph.data import regdb

    kw = dict(
        transform=transform,
        batch_size=batch_size,
        device=device,
        flip=flip,
        num_workers=num_workers,
        progress=progress,
        amp=amp,
    )
    vis, ir = regdb.test_records(root, trial, split)
    records = {"vis": vis, "ir": ir}
    feats = {
        "vis": extract_features(model, vis, "vis", desc="visible", **kw),
        "ir": extract_features(model, ir, "ir", desc="thermal", **kw),
    }
    results = {}
    for name in REGDB_DIRECTIONS:
        q_mod, g_mod = DIRECTIONS[name]
        scores = _score(
            feats[q_mod],
            records[q_mod],
            feats[g_mod],
            records[g_mod],
            protocol="regdb",
            metric=metric,
            rerank=rerank,
        )
        results[name] = {
            **summarise([scores]),
            "protocol": "regdb",
            "query": q_mod,
            "gallery": g_mod,
            "trial": trial,
        }
    return results


def evaluate_llcm(
    model: torch.nn.Module,
    root: str,
    *,
    transform: Callable,
    trials: int = 10,
    split: str = "test",
    metric: str = "cosine",
    rerank: bool = False,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    amp: str = "auto",
) -> dict[str, dict]:
    """IR-to-VIS (``"i2v"``) and VIS-to-IR (``"v2i"``) retrieval on LLCM, trials 0..trials-1.

    As DEEN's reference code: the query is every test image of one modality; each trial's
    gallery is one image per identity and camera of the other modality drawn with
    ``random.seed(trial)`` (:func:`csetgraph.data.llcm.sample_gallery`); gallery images
    with the query's identity and camera are dropped and the CMC is identity-deduplicated
    (``protocol="llcm"``). Every test image's features are extracted once: the galleries
    are subsets of the other direction's query set. ``split="val"`` evaluates on the
    held-out training identities (:func:`csetgraph.data.llcm.val_ids`).

    Returns:
        ``{"i2v": {...}, "v2i": {...}}`` as :func:`summarise` plus ``"protocol"`` and the
        query and gallery modalities.
    """
    from csetgraph.data import llcm

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    kw = dict(
        transform=transform,
        batch_size=batch_size,
        device=device,
        flip=flip,
        num_workers=num_workers,
        progress=progress,
        amp=amp,
    )
    records = {m: llcm.test_records(root, m, split) for m in ("ir", "vis")}
    for modality, recs in records.items():
        if not recs:
            raise ValueError(
                f"the LLCM {split} split of {str(root)!r} has no {modality} images; both "
                "modalities are needed"
            )
    feats = {
        m: extract_features(model, recs, m, desc=f"{m} images", **kw) for m, recs in records.items()
    }
    results = {}
    for name in LLCM_DIRECTIONS:
        q_mod, g_mod = DIRECTIONS[name]
        q_q = pairwise_distance(feats[q_mod], feats[q_mod], metric=metric) if rerank else None
        per_trial = []
        for t in range(trials):
            gallery = llcm.sample_gallery(records[g_mod], t)
            per_trial.append(
                _score(
                    feats[q_mod],
                    records[q_mod],
                    _rows(feats[g_mod], records[g_mod], gallery),
                    gallery,
                    protocol="llcm",
                    metric=metric,
                    rerank=rerank,
                    q_q=q_q,
                )
            )
        results[name] = {
            **summarise(per_trial),
            "protocol": "llcm",
            "query": q_mod,
            "gallery": g_mod,
        }
    return results


def evaluate_dataset(
    model: torch.nn.Module,
    cfg: Config,
    *,
    device: torch.device | str,
    transform: Callable,
    split: str = "test",
    progress: bool = True,
    shots: int = 1,
    gallery: str = "random",
    rerank: bool = False,
) -> dict[str, dict]:
    """The configured data set's protocol: the one entry point for training and scripts.

    ``cfg.data.dataset`` picks :func:`evaluate_sysu` (modes ``cfg.eval.modes``,
    ``cfg.eval.trials`` trials), :func:`evaluate_regdb` (trial ``cfg.data.trial``, both
    directions) or :func:`evaluate_llcm` (``cfg.eval.trials`` trials, both directions);
    ``cfg.eval`` gives the metric, batch size, flip averaging and autocast (``eval.amp``).
    ``shots`` and ``gallery`` apply to SYSU-MM01 only.
    """
    common = dict(
        transform=transform,
        split=split,
        metric=cfg.eval.metric,
        rerank=rerank,
        batch_size=cfg.eval.batch_size,
        device=device,
        flip=cfg.eval.flip,
        num_workers=cfg.data.num_workers,
        progress=progress,
        amp=cfg.eval.amp,
    )
    dataset, root = cfg.data.dataset, cfg.data.root
    if dataset != "sysu_mm01" and (shots != 1 or gallery != "random"):
        raise ValueError(
            f"shots and gallery='official' are SYSU-MM01 options; {dataset} draws "
            "single-shot galleries only"
        )
    if dataset == "sysu_mm01":
        return evaluate_sysu(
            model,
            root,
            modes=cfg.eval.modes,
            trials=cfg.eval.trials,
            shots=shots,
            gallery=gallery,
            **common,
        )
    if dataset == "regdb":
        return evaluate_regdb(model, root, trial=cfg.data.trial, **common)
    if dataset == "llcm":
        return evaluate_llcm(model, root, trials=cfg.eval.trials, **common)
    raise ValueError(f"data.dataset must be sysu_mm01, regdb or llcm, got {dataset!r}")


def format_table(results: dict[str, dict], title: str = "") -> str:
    """The table the papers print: Rank-1/5/10/20, mAP, mINP in percent, mean ± std."""
    header = ["setting", "R-1", "R-5", "R-10", "R-20", "mAP", "mINP"]
    rows = []
    for name, res in results.items():
        cells = [name]
        for k in METRIC_KEYS:
            if k in res["mean"]:
                cells.append(f"{100 * res['mean'][k]:.2f} ± {100 * res['std'][k]:.2f}")
            else:
                cells.append("-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
