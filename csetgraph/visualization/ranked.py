"""Ranked-list figures: a query beside its top-k gallery images (the paper's Figure 6).

Each gallery image is framed by what it is to the query:

* green (:data:`FRAME_COLORS` ``"match"``): the same identity;
* red (``"mismatch"``): another identity;
* grey (``"ignored"``): removed by the protocol, e.g. SYSU-MM01's camera-2 images for a
  camera-3 query (same room) or LLCM's same-identity same-camera images. Ignored images
  are shown where their distance puts them, labelled "ignored", and take no rank: the list
  goes on until ``k`` ranked images are shown, so a row may hold more than ``k`` images.

Ranks count images (as the mAP does), in the order of a stable sort of the distances;
the SYSU/LLCM CMC additionally counts each identity once, which this figure does not do.
Distances are the evaluation's (``cfg.eval.metric``, cosine by default).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from csetgraph.config import Config
from csetgraph.data.records import Record, load_image
from csetgraph.errors import ConfigError
from csetgraph.evaluation.features import extract_features
from csetgraph.evaluation.metrics import ignored_gallery, pairwise_distance
from csetgraph.visualization.run import eval_transform
from csetgraph.visualization.testsets import retrieval_set

__all__ = [
    "FRAME_COLORS",
    "RankedEntry",
    "RankedList",
    "choose_queries",
    "compute_ranked_lists",
    "frame_image",
    "plot_ranked_lists",
    "ranked_lists",
]

#: Frame colours (RGB, 0-255) of the query and of each kind of gallery image.
FRAME_COLORS: dict[str, tuple[int, int, int]] = {
    "query": (40, 90, 200),
    "match": (0, 170, 0),
    "mismatch": (220, 0, 0),
    "ignored": (150, 150, 150),
}
#: Thumbnail size (height, width) in pixels before framing, and the frame width.
THUMB_SIZE = (128, 64)
BORDER = 6
#: Layout in inches: width of a cell, width of the image in it, the text band above each
#: image, the padding below it, and the legend band at the top of the figure.
CELL_WIDTH = 1.25
IMAGE_WIDTH = 1.0
TEXT_HEIGHT = 0.5
PAD_HEIGHT = 0.12
HEADER_HEIGHT = 0.55
#: Narrower figures would clip the title and legend: short lists get empty cells on the right.
MIN_COLUMNS = 6


@dataclass(frozen=True)
class RankedEntry:
    """One gallery image in a query's ranked list."""

    record: Record
    distance: float
    rank: int | None  # 1-based among the images the protocol keeps; None if ignored
    status: str  # "match" | "mismatch" | "ignored"


@dataclass(frozen=True)
class RankedList:
    """A query and its gallery images in distance order (ignored ones included)."""

    query: Record
    entries: list[RankedEntry] = field(default_factory=list)


def ranked_lists(
    dist: np.ndarray,
    query: Sequence[Record],
    gallery: Sequence[Record],
    *,
    k: int = 5,
    protocol: str = "sysu",
) -> list[RankedList]:
    """The top-``k`` ranked gallery images of each query row of ``dist``.

    Args:
        dist: ``(Q, G)`` distances, smaller = closer.
        query, gallery: the records of the rows and columns.
        k: ranked images per query; ignored images in between are kept and marked.
        protocol: which images to ignore (:func:`csetgraph.evaluation.ignored_gallery`).
    """
    dist = np.asarray(dist)
    if dist.shape != (len(query), len(gallery)):
        raise ValueError(
            f"dist must be (len(query), len(gallery)) = ({len(query)}, {len(gallery)}), "
            f"got {dist.shape}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    g_pids = np.array([r.pid for r in gallery])
    g_cams = np.array([r.camid for r in gallery])
    out = []
    for row, q in zip(dist, query, strict=True):
        ignored = ignored_gallery(protocol, q.pid, q.camid, g_pids, g_cams)  # (G,)
        entries: list[RankedEntry] = []
        rank = 0
        for j in np.argsort(row, kind="stable"):
            if rank == k:
                break
            if ignored[j]:
                entries.append(RankedEntry(gallery[j], float(row[j]), None, "ignored"))
                continue
            rank += 1
            status = "match" if g_pids[j] == q.pid else "mismatch"
            entries.append(RankedEntry(gallery[j], float(row[j]), rank, status))
        out.append(RankedList(q, entries))
    return out


def choose_queries(num_query: int, num: int, seed: int = 0) -> list[int]:
    """``num`` distinct query indices drawn with ``random.Random(seed)``, sorted."""
    if num > num_query:
        raise ConfigError(f"asked for {num} queries, but the query set has only {num_query}")
    return sorted(random.Random(seed).sample(range(num_query), num))


@torch.no_grad()
def compute_ranked_lists(
    model: torch.nn.Module,
    cfg: Config,
    *,
    queries: Sequence[int] | None = None,
    num_queries: int = 4,
    seed: int = 0,
    k: int = 5,
    mode: str = "all",
    trial: int = 0,
    split: str = "test",
    direction: str = "i2v",
    device: torch.device | str = "cpu",
) -> list[RankedList]:
    """Ranked lists of chosen (or ``num_queries`` seeded random) queries of one trial.

    The query set and gallery are the evaluation's (:func:`~csetgraph.visualization.testsets
    .retrieval_set`); ``queries`` are indices into the query set. Only the chosen queries and
    the gallery are embedded.
    """
    rs = retrieval_set(cfg, split=split, mode=mode, trial=trial, direction=direction)
    if queries is None:
        queries = choose_queries(len(rs.query), num_queries, seed)
    bad = [i for i in queries if not 0 <= i < len(rs.query)]
    if bad:
        raise ConfigError(f"query indices {bad} out of range: the query set has {len(rs.query)}")
    chosen = [rs.query[i] for i in queries]
    tf = eval_transform(model, cfg)
    kw = dict(
        transform=tf,
        batch_size=cfg.eval.batch_size,
        device=device,
        progress=False,
        amp=cfg.eval.amp,
    )
    q_feat = extract_features(model, chosen, rs.query_modality, **kw)
    g_feat = extract_features(model, rs.gallery, rs.gallery_modality, **kw)
    dist = pairwise_distance(q_feat, g_feat, metric=cfg.eval.metric).cpu().numpy()  # (q, G)
    return ranked_lists(dist, chosen, rs.gallery, k=k, protocol=rs.protocol)


def frame_image(image: Image.Image, status: str, size=THUMB_SIZE, border=BORDER) -> np.ndarray:
    """The image resized to ``size`` (height, width) inside a ``border``-pixel frame.

    Returns ``(h + 2 border, w + 2 border, 3)`` uint8 with the frame in
    ``FRAME_COLORS[status]``.
    """
    h, w = size
    thumb = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR))  # (h, w, 3)
    out = np.empty((h + 2 * border, w + 2 * border, 3), dtype=np.uint8)
    out[:] = FRAME_COLORS[status]
    out[border : border + h, border : border + w] = thumb
    return out


def _row_height() -> float:
    h, w = THUMB_SIZE
    return PAD_HEIGHT + IMAGE_WIDTH * (h + 2 * BORDER) / (w + 2 * BORDER) + TEXT_HEIGHT


def figure_size(num_rows: int, num_columns: int) -> tuple[float, float]:
    """Figure size in inches of a grid of ``num_rows`` lists of ``num_columns`` cells."""
    return max(num_columns, MIN_COLUMNS) * CELL_WIDTH, HEADER_HEIGHT + num_rows * _row_height()


def plot_ranked_lists(
    lists: Mapping[str, Sequence[RankedList]] | Sequence[RankedList],
    *,
    dpi: int = 100,
    title: str = "",
) -> tuple[Figure, list[dict]]:
    """Draw ranked lists: per query, one row per model (e.g. baseline, then CSET).

    Args:
        lists: ``{model name: ranked lists}`` (all models over the same queries, in the same
            order), or the ranked lists of one model.
        dpi: dots per inch of the figure (its size in pixels is :func:`figure_size` x dpi).
        title: text of the legend band at the top (the protocol, the trial ...).

    Returns:
        The figure and one dict per drawn cell: ``row``, ``column``, ``status``, ``rank``,
        ``distance``, ``record``, ``model``, and ``bbox`` = ``(x0, y0, x1, y1)`` of the framed
        image in figure pixels (origin at the top left, as in the saved PNG).
    """
    if not isinstance(lists, Mapping):
        lists = {"": lists}
    names, n_q = list(lists), _check_same_queries(lists)
    n_cols = 1 + max((len(rl.entries) for v in lists.values() for rl in v), default=0)
    fig_w, fig_h = figure_size(n_q * len(names), n_cols)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    legend = (
        "frame: green = same identity, red = other identity, blue = query\n"
        "grey = ignored by the protocol (no rank); d = distance"
    )
    fig.text(0.15 / fig_w, 1 - 0.08 / fig_h, title, ha="left", va="top", fontsize=9, weight="bold")
    fig.text(0.15 / fig_w, 1 - 0.26 / fig_h, legend, ha="left", va="top", fontsize=7.5)
    cells = []
    for qi in range(n_q):
        for mi, name in enumerate(names):
            row = qi * len(names) + mi
            rl = lists[name][qi]
            items = [("query", rl.query, None, None)] + [
                (e.status, e.record, e.rank, e.distance) for e in rl.entries
            ]
            for col, item in enumerate(items):
                cells.append(_draw_cell(fig, row, col, name, *item))
    return fig, cells


def _check_same_queries(lists: Mapping[str, Sequence[RankedList]]) -> int:
    """The number of queries, after checking every model has the same ones in order."""
    n_queries = {len(v) for v in lists.values()}
    if len(n_queries) != 1:
        raise ValueError(f"every model needs the same queries; got lists of sizes {n_queries}")
    (n_q,) = n_queries
    for i in range(n_q):
        paths = {v[i].query.path for v in lists.values()}
        if len(paths) != 1:
            raise ValueError(f"query {i} differs between models: {sorted(paths)}")
    return n_q


def _draw_cell(fig: Figure, row: int, col: int, name: str, status, rec, rank, distance) -> dict:
    """One framed image with its label; returns the cell's description (see the caller)."""
    fig_w, fig_h = fig.get_size_inches()
    dpi = fig.dpi
    row_h = _row_height()
    img_h = row_h - TEXT_HEIGHT - PAD_HEIGHT
    x0 = col * CELL_WIDTH + (CELL_WIDTH - IMAGE_WIDTH) / 2
    y_top = HEADER_HEIGHT + row * row_h + TEXT_HEIGHT  # inches from the figure top
    ax = fig.add_axes((x0 / fig_w, 1 - (y_top + img_h) / fig_h, IMAGE_WIDTH / fig_w, img_h / fig_h))
    ax.imshow(frame_image(load_image(rec.path), status), interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if status == "query":
        head = f"{name}\nquery" if name else "query"
        label = f"{head}\nid {rec.pid} cam {rec.camid}"
    elif status == "ignored":
        label = f"ignored\nid {rec.pid} cam {rec.camid}\nd={distance:.3f}"
    else:
        label = f"rank {rank}\nid {rec.pid} cam {rec.camid}\nd={distance:.3f}"
    color = "dimgray" if status == "ignored" else "black"
    ax.set_title(label, fontsize=7, color=color, pad=2, linespacing=1.1)
    bbox = (x0 * dpi, y_top * dpi, (x0 + IMAGE_WIDTH) * dpi, (y_top + img_h) * dpi)
    return dict(row=row, column=col, status=status, rank=rank, distance=distance, record=rec,
                model=name, bbox=bbox)  # fmt: skip
