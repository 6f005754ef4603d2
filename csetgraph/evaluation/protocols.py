"""Evaluation protocols: feature extraction and the SYSU-MM01 trials.

Features of every image are extracted once (queries once for all trials and modes, each
distinct gallery image once), then each trial's distance matrix is ranked by
:func:`~csetgraph.evaluation.metrics.rank_metrics` under the protocol's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from csetgraph.data.datasets import ImageDataset
from csetgraph.data.records import Record
from csetgraph.evaluation.metrics import pairwise_distance, rank_metrics

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    records: Sequence[Record],
    modality: str,
    *,
    transform: Callable,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> torch.Tensor:
    """Embed images of one modality with ``model.embed``; returns ``(n, D)`` on the CPU.

    With ``flip`` the embedding of each image and of its mirror image are averaged and
    re-normalised.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(
        ImageDataset(records, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    out = []
    try:
        for images, *_ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            feat = model.embed(images, modality)
            if flip:
                feat = feat + model.embed(torch.flip(images, dims=[3]), modality)
                feat = torch.nn.functional.normalize(feat, dim=1)
            out.append(feat.float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def summarise(trials: list[dict[str, float]]) -> dict:
    """Mean and standard deviation over trials of each metric (fractions in [0, 1])."""
    keys = [k for k in METRIC_KEYS if k in trials[0]]
    return {
        "trials": trials,
        "mean": {k: float(np.mean([t[k] for t in trials])) for k in keys},
        "std": {k: float(np.std([t[k] for t in trials])) for k in keys},
    }


def evaluate_sysu(
    model: torch.nn.Module,
    root: str,
    *,
    transform: Callable,
    modes: Sequence[str] = ("all", "indoor"),
    trials: int = 10,
    shots: int = 1,
    split: str = "test",
    metric: str = "cosine",
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Infrared-to-visible retrieval on SYSU-MM01 (or the synthetic data set in its layout).

    Returns:
        ``{mode: {"trials": [...], "mean": {...}, "std": {...}}}`` with the metrics of
        :data:`METRIC_KEYS` as fractions.
    """
    from csetgraph.data.sysu_mm01 import test_split

    kw = dict(
        transform=transform,
        batch_size=batch_size,
        device=device,
        flip=flip,
        num_workers=num_workers,
        progress=progress,
    )
    query, _ = test_split(root, modes[0], 0, shots, split)
    q_feat = extract_features(model, query, "ir", desc="query (ir)", **kw)
    q_pids = np.array([r.pid for r in query])
    q_cams = np.array([r.camid for r in query])
    results = {}
    for mode in modes:
        galleries = [test_split(root, mode, t, shots, split)[1] for t in range(trials)]
        unique = sorted({r.path: r for g in galleries for r in g}.values(), key=lambda r: r.path)
        g_feat_all = extract_features(model, unique, "vis", desc=f"gallery {mode} (vis)", **kw)
        row = {r.path: i for i, r in enumerate(unique)}
        per_trial = []
        for gallery in galleries:
            idx = torch.tensor([row[r.path] for r in gallery])
            dist = pairwise_distance(q_feat, g_feat_all[idx], metric=metric)
            m = rank_metrics(
                dist,
                q_pids,
                np.array([r.pid for r in gallery]),
                q_cams,
                np.array([r.camid for r in gallery]),
                protocol="sysu",
            )
            per_trial.append(m.as_dict())
        results[mode] = summarise(per_trial)
    return results


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
