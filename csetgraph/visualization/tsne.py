"""The modality gap in a picture: t-SNE of test embeddings, and two distances that sum it up.

Embeddings are the retrieval embeddings (``model.embed``: L2-normalised, clean stream),
visible images through the visible encoder and infrared images through the infrared one.
The numbers printed with the figure are computed on these embeddings, not on the 2-D
t-SNE coordinates (t-SNE distorts distances):

* **intra-identity cross-modal distance**: the mean Euclidean distance ``||v - i||`` over
  every pair (visible image ``v``, infrared image ``i``) of the same identity;
* **inter-identity distance**: the mean Euclidean distance over every unordered pair of
  images (of any modalities) of different identities;
* **inter-identity cross-modal distance** (also returned): the same over (visible,
  infrared) pairs of different identities only.

A model that closes the modality gap brings the first well below the other two.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from csetgraph.config import Config
from csetgraph.data.records import Record
from csetgraph.errors import ConfigError
from csetgraph.evaluation.features import extract_features
from csetgraph.visualization.run import eval_transform
from csetgraph.visualization.testsets import split_images

__all__ = [
    "ModalityEmbeddings",
    "embed_test_images",
    "modality_distances",
    "plot_tsne",
    "tsne_2d",
]


@dataclass(frozen=True)
class ModalityEmbeddings:
    """Embeddings of images of both modalities, with their labels."""

    features: np.ndarray  # (n, D) L2-normalised
    pids: np.ndarray  # (n,)
    modalities: np.ndarray  # (n,) "vis" / "ir"
    records: list[Record]


def modality_distances(
    features: np.ndarray, pids: np.ndarray, modalities: np.ndarray
) -> dict[str, float]:
    """Mean Euclidean distances over image pairs (see the module docstring).

    Returns:
        ``{"intra_cross": ..., "inter": ..., "inter_cross": ...}``; a kind with no pair is NaN.

    Shapes:
        features ``(n, D)``, pids ``(n,)``, modalities ``(n,)``.
    """
    x = np.asarray(features, dtype=np.float64)
    pids, modalities = np.asarray(pids), np.asarray(modalities)
    if not (len(x) == len(pids) == len(modalities)):
        raise ValueError(
            f"features, pids and modalities need one row each: {len(x)}, {len(pids)}, "
            f"{len(modalities)}"
        )
    sq = (x * x).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))  # (n, n)
    same_id = pids[:, None] == pids[None, :]
    cross = (modalities[:, None] == "vis") & (modalities[None, :] == "ir")  # ordered (vis, ir)
    upper = np.triu(np.ones_like(same_id), k=1)  # each unordered pair once

    def mean(mask: np.ndarray) -> float:
        return float(dist[mask].mean()) if mask.any() else float("nan")

    return {
        "intra_cross": mean(same_id & cross),
        "inter": mean(~same_id & upper),
        "inter_cross": mean(~same_id & cross),
    }


@torch.no_grad()
def embed_test_images(
    model: torch.nn.Module,
    cfg: Config,
    *,
    split: str = "test",
    max_ids: int | None = 12,
    max_per_modality: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ModalityEmbeddings:
    """Embed the split's images of both modalities.

    Args:
        max_ids: keep this many identities (drawn with ``random.Random(seed)``); ``None``
            keeps all. A t-SNE of hundreds of identities is unreadable.
        max_per_modality: at most this many images per identity and modality (the first
            ones in file order); ``None`` keeps all.
    """
    images = split_images(cfg, split)
    pids = sorted({r.pid for m in images.values() for r in m})
    if max_ids is not None and max_ids < len(pids):
        pids = sorted(random.Random(seed).sample(pids, max_ids))
    keep = set(pids)
    tf = eval_transform(model, cfg)
    feats, recs = [], []
    for modality in ("vis", "ir"):
        chosen, count = [], {}
        for r in images[modality]:
            if r.pid in keep and (
                max_per_modality is None or count.get(r.pid, 0) < max_per_modality
            ):
                chosen.append(r)
                count[r.pid] = count.get(r.pid, 0) + 1
        if not chosen:
            raise ConfigError(f"no {modality} images of the chosen identities in the {split} split")
        feats.append(
            extract_features(
                model,
                chosen,
                modality,
                transform=tf,
                batch_size=cfg.eval.batch_size,
                device=device,
                progress=False,
                amp=cfg.eval.amp,
            )
            .cpu()
            .numpy()
        )
        recs += chosen
    return ModalityEmbeddings(
        np.concatenate(feats),
        np.array([r.pid for r in recs]),
        np.array([r.modality for r in recs]),
        recs,
    )


def tsne_2d(features: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """scikit-learn t-SNE to 2-D (PCA initialisation, ``random_state=seed``).

    The perplexity is capped at ``(n - 1) / 3`` so that small sets work.

    Shapes:
        ``(n, D) -> (n, 2)``.
    """
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 images, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float64))


def plot_tsne(
    coords: np.ndarray,
    pids: Sequence[int],
    modalities: Sequence[str],
    *,
    distances: dict[str, float] | None = None,
    title: str = "t-SNE of test embeddings",
    figsize: tuple[float, float] = (8.0, 6.5),
    dpi: int = 100,
) -> Figure:
    """Scatter of 2-D coordinates: colour = identity, marker = modality (o visible, ^ infrared)."""
    pids, modalities = np.asarray(pids), np.asarray(modalities)
    ids = sorted(set(pids.tolist()))
    cmap = matplotlib.colormaps["tab20" if len(ids) > 10 else "tab10"]
    colour = {p: cmap(i % cmap.N) for i, p in enumerate(ids)}
    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_axes((0.08, 0.1, 0.62, 0.78))
    for modality, marker in (("vis", "o"), ("ir", "^")):
        sel = modalities == modality
        ax.scatter(
            coords[sel, 0],
            coords[sel, 1],
            c=[colour[p] for p in pids[sel]],
            marker=marker,
            s=36,
            edgecolors="black" if modality == "ir" else "none",
            linewidths=0.5,
        )
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title, fontsize=11)
    handles = [
        Line2D([], [], marker="o", ls="", color="gray", label="visible"),
        Line2D([], [], marker="^", ls="", color="gray", markeredgecolor="black", label="infrared"),
    ]
    leg = ax.legend(handles=handles, title="modality", loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.add_artist(leg)
    if len(ids) <= 20:
        id_handles = [
            Line2D([], [], marker="s", ls="", color=colour[p], label=f"id {p}") for p in ids
        ]
        ax.legend(
            handles=id_handles,
            title="identity",
            loc="upper left",
            bbox_to_anchor=(1.02, 0.78),
            ncol=2 if len(ids) > 10 else 1,
            fontsize=8,
        )
        ax.add_artist(leg)
    if distances is not None:
        text = (
            "mean Euclidean distance\nof L2-normalised embeddings\n"
            f"same identity, vis-ir: {distances['intra_cross']:.3f}\n"
            f"different ids, all pairs: {distances['inter']:.3f}\n"
            f"different ids, vis-ir: {distances['inter_cross']:.3f}"
        )
        fig.text(0.73, 0.1, text, fontsize=8, ha="left", va="bottom", linespacing=1.4)
    return fig
