"""Token response heat maps (the paper's Figure 5): where the class token looks.

Two sources, selectable:

* ``"attention"`` -- class-token self-attention of the encoder. For a block with input ``x``
  the weights are recomputed from the block's own projections,
  ``A = softmax(q k^T * scale)`` with ``q, k`` from ``attn.qkv(norm1(x))`` (after the
  attention's ``q_norm`` / ``k_norm``), exactly what the block applies. The map is the class
  token's row over the patch columns, averaged over heads and over the last ``num_blocks``
  blocks (default: the last block only).
* ``"rollout"`` -- attention rollout (Abnar and Zuidema, 2020) over every block: per block the
  head-averaged attention with the residual path added, ``A' = (A + I) / 2``, multiplied from
  the first block to the last, ``R = A'_L ... A'_1``; the map is ``R``'s class row over the
  patches. It follows information through all blocks, not only the last one.
* ``"mhga"`` -- the MHGA attention of the class node (models with ``model.mhga.enabled``). At
  inference the graph of one image has its ``N`` tokens as nodes; the class token is node 0.
  The map is node 0's attention over the patch nodes (row 0 of the ``[target, source]``
  attention), averaged over heads.

Each visible image goes through the visible encoder and each infrared image through the
infrared one, as at test time. The ``(h, w)`` patch map is upsampled bilinearly to the
displayed image's size and min-max normalised to ``[0, 1]`` (a constant map becomes 0).
With overlapping patches (``patch_stride`` < patch size) the grid is stretched over the
image, which places each patch's value at the centre of its receptive field only roughly.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from csetgraph.config import Config
from csetgraph.data.records import Record, load_image
from csetgraph.errors import ConfigError
from csetgraph.models.cset import CSET
from csetgraph.visualization.run import eval_transform

__all__ = [
    "SOURCES",
    "HeatMap",
    "block_attention",
    "class_token_attention",
    "compute_heatmaps",
    "identity_pairs",
    "mhga_class_attention",
    "normalise_map",
    "plot_heatmaps",
    "upsample_map",
]

SOURCES = ("attention", "rollout", "mhga")
#: Displayed image size (height, width) in pixels, and the layout in inches.
DISPLAY_SIZE = (128, 64)
CELL_WIDTH = 1.4
IMAGE_WIDTH = 1.1
TEXT_HEIGHT = 0.45
PAD_HEIGHT = 0.1
HEADER_HEIGHT = 0.7
LABEL_WIDTH = 1.1


def block_attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Self-attention weights a timm ViT block applies to its input ``x``.

    Shapes:
        - x: ``(B, N, C)`` -> ``(B, heads, N, N)`` rows = queries, summing to 1.
    """
    attn = block.attn
    B, N, _ = x.shape
    qkv = attn.qkv(block.norm1(x))  # (B, N, 3 * heads * head_dim)
    qkv = qkv.reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)


@torch.no_grad()
def class_token_attention(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    *,
    method: str = "attention",
    num_blocks: int = 1,
) -> torch.Tensor:
    """Class-token attention over the patch grid of a :class:`~csetgraph.models.encoder.ViTEncoder`.

    Args:
        encoder: the encoder of the images' modality.
        images: the transformed input images.
        method: ``"attention"`` (mean over heads and the last ``num_blocks`` blocks) or
            ``"rollout"`` (over every block); see the module docstring.
        num_blocks: blocks averaged by ``"attention"``.

    Shapes:
        - images: ``(B, 3, H, W)`` -> ``(B, h, w)`` non-negative weights.
    """
    if method not in ("attention", "rollout"):
        raise ValueError(f"method must be 'attention' or 'rollout', got {method!r}")
    depth = len(encoder.blocks)
    if not 1 <= num_blocks <= depth:
        raise ConfigError(
            f"num_blocks must be in [1, {depth}] (the encoder's depth), got {num_blocks}"
        )
    x = encoder.embed_tokens(images)  # (B, N, C)
    maps = []
    for blk in encoder.blocks:
        maps.append(block_attention(blk, x).mean(dim=1))  # (B, N, N) head average
        x = blk(x)
    prefix = encoder.vit.num_prefix_tokens
    if method == "attention":
        att = torch.stack(maps[-num_blocks:]).mean(dim=0)  # (B, N, N)
        row = att[:, 0, prefix:]  # (B, h*w)
    else:
        N = maps[0].shape[-1]
        eye = torch.eye(N, dtype=maps[0].dtype, device=maps[0].device)
        rollout = eye.expand_as(maps[0])
        for a in maps:  # first block to last: R <- A'_k R
            rollout = (0.5 * a + 0.5 * eye) @ rollout
        row = rollout[:, 0, prefix:]  # (B, h*w)
    h, w = encoder.grid_size
    return row.reshape(-1, h, w)  # (B, h, w)


@torch.no_grad()
def mhga_class_attention(model: CSET, images: torch.Tensor, modality: str) -> torch.Tensor:
    """MHGA attention of the class node over the patch nodes, averaged over heads.

    The single-image graph of inference: the branch input is the clean stream after block
    ``L - 1``, which goes through the branch's extra block and norm; node 0 is the class token.

    Shapes:
        - images: ``(B, 3, H, W)`` -> ``(B, h, w)`` non-negative weights.
    """
    if model.mhga is None:
        raise ConfigError(
            "this model has no MHGA branch (model.mhga.enabled=false): use the 'attention' "
            "or 'rollout' heat map"
        )
    _, branch = model.forward_features(images, modality, return_branch=True)  # (B, N, C)
    _, att = model.mhga({modality: branch}, return_attention_weights=True)  # (B, H, N, N)
    B, (h, w) = images.shape[0], model.mhga.grid_size
    row = att.mean(dim=1)[:, 0, 1:]  # (B, h*w): class node over the patch nodes
    return row.reshape(B, h, w)  # (B, h, w)


def upsample_map(grid_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(h, w)`` or ``(B, h, w)`` maps to ``size = (H, W)``."""
    squeeze = grid_map.dim() == 2
    x = grid_map[None] if squeeze else grid_map
    out = F.interpolate(x[:, None].float(), size=size, mode="bilinear", align_corners=False)
    out = out[:, 0]  # (B, H, W)
    return out[0] if squeeze else out


def normalise_map(m: np.ndarray) -> np.ndarray:
    """Min-max normalisation to ``[0, 1]``; a constant map becomes all zeros."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    if hi - lo <= 0:
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


@dataclass(frozen=True)
class HeatMap:
    """One image, its token response, and where it came from."""

    record: Record
    image: np.ndarray  # (H, W, 3) uint8: the image as displayed
    heat: np.ndarray  # (H, W) float64 in [0, 1]
    source: str


def identity_pairs(
    records: Mapping[str, Sequence[Record]],
    *,
    num_ids: int = 2,
    pids: Sequence[int] | None = None,
    seed: int = 0,
) -> list[tuple[Record, Record]]:
    """One visible and one infrared image of each of ``num_ids`` identities (or ``pids``).

    Identities having both modalities are drawn with ``random.Random(seed)``, and one
    image of each modality per identity with the same generator.
    """
    by_pid: dict[int, dict[str, list[Record]]] = {}
    for modality in ("vis", "ir"):
        for r in records[modality]:
            by_pid.setdefault(r.pid, {"vis": [], "ir": []})[modality].append(r)
    both = sorted(p for p, v in by_pid.items() if v["vis"] and v["ir"])
    rng = random.Random(seed)
    if pids is None:
        if num_ids > len(both):
            raise ConfigError(f"asked for {num_ids} identities; {len(both)} have both modalities")
        pids = sorted(rng.sample(both, num_ids))
    missing = [p for p in pids if p not in both]
    if missing:
        raise ConfigError(f"identities {missing} do not have images of both modalities")
    return [(rng.choice(by_pid[p]["vis"]), rng.choice(by_pid[p]["ir"])) for p in pids]


def compute_heatmaps(
    model: CSET,
    cfg: Config,
    records: Sequence[Record],
    *,
    source: str = "attention",
    num_blocks: int = 1,
    size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> list[HeatMap]:
    """Heat maps of ``records`` (any mix of modalities) with one model.

    Args:
        source: ``"attention"``, ``"rollout"`` or ``"mhga"`` (see the module docstring).
        num_blocks: blocks averaged by ``"attention"``.
        size: displayed ``(height, width)``; default: each image's own size.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    model.eval()
    tf = eval_transform(model, cfg)
    out = []
    for rec in records:
        img = load_image(rec.path)
        if size is not None:
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        x = tf(img)[None].to(device)  # (1, 3, H', W')
        if source == "mhga":
            grid = mhga_class_attention(model, x, rec.modality)
        else:
            grid = class_token_attention(
                model.encoder(rec.modality), x, method=source, num_blocks=num_blocks
            )
        heat = upsample_map(grid[0].cpu(), (img.height, img.width)).numpy()
        out.append(HeatMap(rec, np.asarray(img), normalise_map(heat), source))
    return out


def figure_size(num_rows: int, num_columns: int) -> tuple[float, float]:
    """Figure size in inches: a label column, then ``num_columns`` image cells per row."""
    h, w = DISPLAY_SIZE
    row_h = PAD_HEIGHT + IMAGE_WIDTH * h / w + TEXT_HEIGHT
    return LABEL_WIDTH + num_columns * CELL_WIDTH, HEADER_HEIGHT + num_rows * row_h


_SOURCE_TEXT = {
    "attention": "class-token\nattention",
    "rollout": "attention\nrollout",
    "mhga": "MHGA\nclass node",
}


def plot_heatmaps(
    maps: Mapping[str, Sequence[HeatMap]],
    *,
    dpi: int = 100,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str = "",
) -> Figure:
    """Images in the first row, each model's heat maps over them in the next rows.

    Args:
        maps: ``{model name: heat maps}``, every model over the same records in the same
            order (e.g. the visible and infrared image of each identity, in turn).
        alpha: opacity of the heat map over the image.
        title: text of the band at the top.
    """
    names = list(maps)
    records = [hm.record.path for hm in maps[names[0]]]
    for name in names[1:]:
        if [hm.record.path for hm in maps[name]] != records:
            raise ValueError(f"model {name!r} has heat maps of other images than {names[0]!r}")
    first = maps[names[0]]
    fig_w, fig_h = figure_size(1 + len(names), len(first))
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    fig.text(0.15 / fig_w, 1 - 0.1 / fig_h, title, ha="left", va="top", fontsize=9, weight="bold")
    _draw_row(fig, 0, "image", first, None)  # the images alone
    mappable = None
    for r, name in enumerate(names, start=1):
        sources = {hm.source for hm in maps[name]}
        # Wrapped to the label column's width, so it never runs into the images.
        label = textwrap.fill(name, width=16) + "\n"
        label += "\n".join(_SOURCE_TEXT[s] for s in sorted(sources))
        mappable = _draw_row(fig, r, label, maps[name], dict(cmap=cmap, alpha=alpha))
    if mappable is not None:
        _colour_bar(fig, mappable)
    return fig


def _draw_row(fig: Figure, row: int, label: str, maps: Sequence[HeatMap], overlay: dict | None):
    """One row: its label, then each image (with its heat map when ``overlay`` is given).

    Returns the last heat-map image (for the colour bar), or None.
    """
    fig_w, fig_h = fig.get_size_inches()
    h, w = DISPLAY_SIZE
    img_h = IMAGE_WIDTH * h / w
    top = HEADER_HEIGHT + row * (PAD_HEIGHT + img_h + TEXT_HEIGHT) + TEXT_HEIGHT
    fig.text(0.1 / fig_w, 1 - (top + img_h / 2) / fig_h, label, ha="left", va="center",
             fontsize=7.5)  # fmt: skip
    mappable = None
    for c, hm in enumerate(maps):
        x0 = LABEL_WIDTH + c * CELL_WIDTH + (CELL_WIDTH - IMAGE_WIDTH) / 2
        ax = fig.add_axes(
            (x0 / fig_w, 1 - (top + img_h) / fig_h, IMAGE_WIDTH / fig_w, img_h / fig_h)
        )
        ax.imshow(hm.image, aspect="auto", interpolation="bilinear")
        ax.set_axis_off()
        if overlay is not None:
            mappable = ax.imshow(hm.heat, vmin=0, vmax=1, aspect="auto", **overlay)
        else:
            modality = "visible" if hm.record.modality == "vis" else "infrared"
            title = f"id {hm.record.pid}, {modality}\ncam {hm.record.camid}"
            ax.set_title(title, fontsize=7, pad=2)
    return mappable


def _colour_bar(fig: Figure, mappable) -> None:
    """Second header line, under the title: "normalised response" then the colour bar."""
    fig_w, fig_h = fig.get_size_inches()
    bar_w = min(2.4, fig_w - LABEL_WIDTH - 0.3)
    fig.text(0.1 / fig_w, 1 - 0.4 / fig_h, "normalised\nresponse", fontsize=7, ha="left",
             va="center")  # fmt: skip
    cax = fig.add_axes((LABEL_WIDTH / fig_w, 1 - 0.42 / fig_h, bar_w / fig_w, 0.08 / fig_h))
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    cb.ax.tick_params(labelsize=6, length=2, pad=1)
    cb.set_ticks([0, 0.5, 1])
