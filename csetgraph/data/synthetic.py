"""A synthetic visible–infrared person re-identification data set.

Real VI-ReID benchmarks (SYSU-MM01, RegDB, LLCM) are distributed by their authors on request,
so everything in csetgraph is developed and tested on persons rendered here, written to disk in
exactly the layouts of the real data sets so that the real readers read them.

The renderer keeps the property that makes VI-ReID hard: a real cross-modal gap.

* Cues that survive the change of modality: body shape and proportions, the clothing pattern
  (stripes, checks, dots and their frequency), prints on the top, trouser or skirt shape,
  accessories (backpack, bag, hat) and the hairstyle.
* Cues that do not: clothing and hair *colours* exist only in visible images (drawn from a
  palette, as real clothes mostly are). An infrared image is a single-intensity "heat"
  rendering in which each part's intensity follows a per-identity material value -- one of a
  few levels, drawn only partly from the dye's brightness, as near-infrared reflectance of
  fabrics is -- with per-image variation, sensor noise and blur.
* Per-camera changes: viewpoint (front, back, side), scale, position, background and lighting.

Everything is deterministic given ``seed``: an identity's appearance depends only on
``(seed, pid)`` and an image only on ``(seed, pid, camera, index)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from csetgraph.config import SyntheticConfig
from csetgraph.data.sysu_mm01 import IR_CAMERAS as SYSU_IR_CAMERAS
from csetgraph.data.sysu_mm01 import MODE_CAMERAS
from csetgraph.errors import DataFolderError
from csetgraph.files import write_atomic

log = logging.getLogger(__name__)

#: The default set's size: ``data.synthetic.*``'s defaults, defined once in the config.
_DEFAULT = SyntheticConfig()

#: SYSU-MM01 camera roles, as its reader defines them: 1, 2, 4, 5 RGB, 3 and 6 near-infrared.
SYSU_RGB_CAMERAS = MODE_CAMERAS["all"]

_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots")
_ACCESSORIES = ("none", "backpack", "bag", "hat")
_HAIR = ("short", "long", "bald", "ponytail")
_LOGOS = ("none", "square", "circle", "bar")
#: Infrared "materials": a few emissivity levels shared by all identities, so an infrared
#: intensity alone says little about who someone is (unlike a visible colour).
_MATERIALS = (0.3, 0.5, 0.7, 0.9)
#: Clothing colours come from a palette, as real clothes mostly do: colour narrows down who
#: someone is but does not identify them on its own.
_PALETTE = (
    (0.08, 0.08, 0.1),  # black
    (0.9, 0.9, 0.88),  # white
    (0.5, 0.5, 0.52),  # grey
    (0.12, 0.2, 0.55),  # navy
    (0.3, 0.55, 0.85),  # light blue
    (0.7, 0.12, 0.12),  # red
    (0.15, 0.45, 0.2),  # green
    (0.85, 0.75, 0.2),  # yellow
    (0.45, 0.3, 0.18),  # brown
    (0.8, 0.45, 0.6),  # pink
)


@dataclass(frozen=True)
class Identity:
    """The appearance of one synthetic person (modality independent and dependent parts)."""

    pid: int
    height: float  # fraction of the image height the person fills
    shoulder: float  # shoulder width relative to the image width
    head: float  # head radius relative to the image width
    leg_ratio: float  # legs' share of the body below the head
    top_pattern: str
    top_freq: float
    bottom_skirt: bool
    bottom_pattern: str
    accessory: str
    hair: str
    logo: str  # a print on the top: its shape and place survive the change of modality
    logo_x: float
    logo_y: float
    logo_size: float
    # visible only
    top_rgb: tuple[float, float, float]
    top_rgb2: tuple[float, float, float]
    bottom_rgb: tuple[float, float, float]
    hair_rgb: tuple[float, float, float]
    acc_rgb: tuple[float, float, float]
    skin_rgb: tuple[float, float, float]
    logo_rgb: tuple[float, float, float]
    # infrared only: emissivity-like "material" values in [0, 1]
    logo_heat: float
    top_heat: float
    bottom_heat: float
    hair_heat: float
    acc_heat: float
    skin_heat: float


def make_identity(pid: int, seed: int = 0) -> Identity:
    """Draw the appearance of identity ``pid`` (deterministic in ``(seed, pid)``)."""
    rng = np.random.default_rng([seed, pid, 7919])

    def rgb() -> tuple[float, float, float]:
        return _PALETTE[int(rng.integers(len(_PALETTE)))]

    def material(colour, avoid: float | None = None) -> float:
        # Near-infrared reflectance of a dyed fabric is only partly tied to how bright the
        # dye looks: the level is drawn around the colour's luminance, then quantised to one
        # of four levels, so hue is lost and similar dyes fall on the same level. (Calibrated
        # on validation identities: weight 0.85 on the luminance, was 0.7; README.)
        lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        target = 0.85 * lum + 0.15 * float(rng.uniform(0.2, 1.0))
        levels = [m for m in _MATERIALS if m != avoid]
        return float(min(levels, key=lambda m: abs(m - target)))

    top, bottom, acc, logo, hair = rgb(), rgb(), rgb(), rgb(), rgb()
    top_heat = material(top)

    return Identity(
        pid=pid,
        height=float(rng.uniform(0.72, 0.9)),
        shoulder=float(rng.uniform(0.42, 0.68)),
        head=float(rng.uniform(0.10, 0.15)),
        leg_ratio=float(rng.uniform(0.42, 0.56)),
        top_pattern=str(rng.choice(_PATTERNS)),
        top_freq=float(rng.uniform(2.0, 5.0)),
        bottom_skirt=bool(rng.random() < 0.3),
        bottom_pattern=str(rng.choice(("solid", "hstripes", "vstripes"))),
        accessory=str(rng.choice(_ACCESSORIES)),
        hair=str(rng.choice(_HAIR)),
        logo=str(rng.choice(_LOGOS)),
        logo_x=float(rng.uniform(-0.22, 0.22)),
        logo_y=float(rng.uniform(0.25, 0.65)),
        logo_size=float(rng.uniform(0.1, 0.18)),
        top_rgb=top,
        # the pattern's second tone is a darker shade, so a pattern has luminance contrast
        # (and so survives in infrared) whatever the colours are
        top_rgb2=tuple(float(c) * float(rng.uniform(0.15, 0.4)) for c in top),
        bottom_rgb=bottom,
        hair_rgb=hair,
        acc_rgb=acc,
        skin_rgb=tuple(float(c) for c in rng.uniform([0.45, 0.3, 0.2], [0.95, 0.8, 0.7])),
        logo_rgb=logo,
        logo_heat=material(logo, avoid=top_heat),
        top_heat=top_heat,
        bottom_heat=material(bottom),
        hair_heat=0.15 + 0.4 * material(hair),
        acc_heat=material(acc),
        skin_heat=0.95,
    )


def _pattern(kind: str, freq: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A texture in [0, 1] over normalised part coordinates (1 = primary, 0 = secondary)."""
    if kind == "solid":
        return np.ones_like(yy)
    if kind == "hstripes":
        return (np.sin(yy * freq * np.pi) > 0).astype(np.float32)
    if kind == "vstripes":
        return (np.sin(xx * freq * np.pi * 0.8) > 0).astype(np.float32)
    if kind == "checks":
        return ((np.sin(yy * freq * np.pi) > 0) ^ (np.sin(xx * freq * np.pi * 0.8) > 0)).astype(
            np.float32
        )
    if kind == "dots":
        return 1.0 - (
            (np.sin(yy * freq * np.pi) ** 2 + np.sin(xx * freq * np.pi * 0.8) ** 2) < 0.35
        ).astype(np.float32)
    raise ValueError(f"unknown pattern {kind!r}")


def _camera_rng(seed: int, camid: int) -> np.random.Generator:
    return np.random.default_rng([seed, camid, 104729])


@dataclass(frozen=True, eq=False)
class _Camera:
    """What a camera sets for every image it takes (drawn from ``(seed, camid)``)."""

    camid: int
    bg: np.ndarray  # background colour at the top of the image
    bg2: np.ndarray  # background colour at the bottom
    light: float
    tint: np.ndarray
    scale: float
    view: int  # the typical viewpoint: 0 front, 1 back, 2 side
    ir_bg: float  # infrared background intensity


def _camera(seed: int, camid: int) -> _Camera:
    cam = _camera_rng(seed, camid)
    bg = cam.uniform(0.15, 0.85, size=3)
    bg2 = cam.uniform(0.15, 0.85, size=3)
    light = cam.uniform(0.7, 1.2)
    tint = cam.uniform(0.85, 1.15, size=3)
    scale = cam.uniform(0.85, 1.05)
    view = int(cam.integers(0, 3))
    ir_bg = cam.uniform(0.05, 0.35)
    return _Camera(camid, bg, bg2, light, tint, scale, view, ir_bg)


@dataclass(frozen=True, eq=False)
class _Pose:
    """Where the person stands in one image, on pixel grids normalised to [0, 1)."""

    H: int
    W: int
    yy: np.ndarray
    xx: np.ndarray
    view: int
    scale: float
    cx: float  # horizontal centre of the body
    top_y: float  # top of the head
    body_h: float
    head_r: float
    side: float  # width factor: narrower seen from the side
    shoulder: float


def _pose(identity: Identity, camera: _Camera, rng: np.random.Generator, H: int, W: int) -> _Pose:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    yy /= H
    xx /= W
    view = camera.view if rng.random() < 0.7 else int(rng.integers(0, 3))
    scale = camera.scale * rng.uniform(0.96, 1.04)
    cx = 0.5 + rng.uniform(-0.08, 0.08)
    top_y = 0.5 - identity.height * scale / 2 + rng.uniform(-0.04, 0.04)
    body_h = identity.height * scale
    head_r = identity.head * scale
    side = 0.65 if view == 2 else 1.0
    shoulder = identity.shoulder * scale * side
    return _Pose(H, W, yy, xx, view, scale, cx, top_y, body_h, head_r, side, shoulder)


@dataclass(frozen=True, eq=False)
class _Masks:
    """Boolean part masks of one image and the body lines the textures are laid out on."""

    head: np.ndarray
    hair: np.ndarray
    torso: np.ndarray
    arms: np.ndarray
    bottom: np.ndarray
    legs: np.ndarray
    acc: np.ndarray
    acc_front: bool  # whether the accessory is drawn over the body
    head_cy: float
    torso_top: float
    torso_bot: float
    lt: np.ndarray  # coordinate down the legs: 0 at the hips, 1 at the feet


def _head_and_hair(identity: Identity, p: _Pose) -> tuple[np.ndarray, np.ndarray, float]:
    H, W, yy, xx, cx, head_r = p.H, p.W, p.yy, p.xx, p.cx, p.head_r
    head_cy = p.top_y + head_r * 2.0 * (W / H) * 0.9
    head = ((xx - cx) / head_r) ** 2 + ((yy - head_cy) / (head_r * W / H)) ** 2 < 1.0
    hair = np.zeros_like(head)
    hair_top = ((xx - cx) / (head_r * 1.1)) ** 2 + (
        (yy - head_cy + head_r * 0.35 * W / H) / (head_r * W / H)
    ) ** 2 < 1.0
    if identity.hair == "short":
        hair = hair_top & (yy < head_cy)
    elif identity.hair == "long":
        hair = hair_top | (
            (np.abs(xx - cx) < head_r * 1.05)
            & (yy > head_cy)
            & (yy < head_cy + head_r * 3.2 * W / H)
        )
    elif identity.hair == "ponytail":
        tail_x = cx + (head_r * 0.9 if p.view == 2 else 0.0)
        hair = (hair_top & (yy < head_cy)) | (
            (np.abs(xx - tail_x) < head_r * 0.35)
            & (yy > head_cy)
            & (yy < head_cy + head_r * 2.5 * W / H)
        )
    if p.view == 1:  # seen from the back: the hair covers the head
        hair = hair | (head & (identity.hair != "bald"))
    return head, hair, head_cy


def _bottom_and_legs(
    identity: Identity, p: _Pose, torso_bot: float, leg_len: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx, cx, shoulder = p.yy, p.xx, p.cx, p.shoulder
    leg_bot = p.top_y + p.body_h
    lt = (yy - torso_bot) / max(leg_len, 1e-3)
    if identity.bottom_skirt:
        skirt_half = shoulder / 2 * (0.8 + 0.35 * lt)
        bottom = (yy >= torso_bot) & (lt < 0.55) & (np.abs(xx - cx) < skirt_half)
        legs = (lt >= 0.55) & (yy < leg_bot) & (np.abs(np.abs(xx - cx) - shoulder * 0.18) < 0.05)
    else:
        gap = 0.02 + 0.03 * lt
        leg_w = shoulder * 0.2 * p.side
        bottom = (
            (yy >= torso_bot)
            & (yy < leg_bot)
            & (np.abs(xx - cx) > gap * p.side)
            & (np.abs(xx - cx) < gap * p.side + leg_w)
        )
        legs = np.zeros_like(bottom)
    return bottom, legs, lt


def _accessory(
    identity: Identity, p: _Pose, head_cy: float, torso_top: float, torso_bot: float
) -> tuple[np.ndarray, bool]:
    H, W, yy, xx, cx, head_r, shoulder, view = (
        p.H,
        p.W,
        p.yy,
        p.xx,
        p.cx,
        p.head_r,
        p.shoulder,
        p.view,
    )
    acc = np.zeros(yy.shape, dtype=bool)
    acc_front = False
    if identity.accessory == "backpack":
        bp_half = shoulder * (0.42 if view == 1 else 0.18)
        bp_x = cx + (shoulder * 0.45 if view == 2 else 0.0)
        acc = (
            (yy >= torso_top + 0.02)
            & (yy < torso_top + (torso_bot - torso_top) * 0.75)
            & (np.abs(xx - bp_x) < bp_half)
        )
        acc_front = view in (1, 2)
        if view == 0:  # straps only, seen from the front
            acc = acc & (np.abs(np.abs(xx - cx) - shoulder * 0.22) < 0.03)
            acc_front = True
    elif identity.accessory == "bag":
        bag_x = cx + shoulder * 0.55
        acc = (np.abs(xx - bag_x) < 0.09) & (np.abs(yy - torso_bot) < 0.06)
        acc_front = True
    elif identity.accessory == "hat":
        acc = (np.abs(xx - cx) < head_r * 1.3) & (
            np.abs(yy - (head_cy - head_r * 0.7 * W / H)) < head_r * 0.35 * W / H
        )
        acc_front = True
    return acc, acc_front


def _masks(identity: Identity, p: _Pose) -> _Masks:
    """Part masks (head, hair, torso, arms, bottom, legs, accessory) of one image."""
    yy, xx, cx = p.yy, p.xx, p.cx
    head, hair, head_cy = _head_and_hair(identity, p)
    torso_top = head_cy + p.head_r * p.W / p.H * 0.95
    leg_len = p.body_h * identity.leg_ratio
    torso_bot = p.top_y + p.body_h - leg_len
    t = (yy - torso_top) / max(torso_bot - torso_top, 1e-3)
    torso_half = p.shoulder / 2 * (1.0 - 0.18 * t)
    torso = (yy >= torso_top) & (yy < torso_bot) & (np.abs(xx - cx) < torso_half)
    arms = (
        (yy >= torso_top + 0.01)
        & (yy < torso_bot + 0.05)
        & (np.abs(xx - cx) >= torso_half)
        & (np.abs(xx - cx) < torso_half + 0.07 * p.scale)
    )
    bottom, legs, lt = _bottom_and_legs(identity, p, torso_bot, leg_len)
    acc, acc_front = _accessory(identity, p, head_cy, torso_top, torso_bot)
    return _Masks(
        head, hair, torso, arms, bottom, legs, acc, acc_front, head_cy, torso_top, torso_bot, lt
    )


@dataclass(frozen=True, eq=False)
class _Textures:
    """Clothing textures in [0, 1] (1 = primary tone) and the print's mask."""

    top: np.ndarray
    bottom: np.ndarray
    logo: np.ndarray


def _textures(identity: Identity, p: _Pose, m: _Masks) -> _Textures:
    # Texture coordinates local to each part, so patterns move with the body.
    ty = (p.yy - m.torso_top) / max(m.torso_bot - m.torso_top, 1e-3)
    tx = (p.xx - p.cx) / max(p.shoulder, 1e-3)
    top_tex = _pattern(identity.top_pattern, identity.top_freq, ty, tx)
    bot_tex = _pattern(identity.bottom_pattern, 4.0, m.lt, tx)

    logo = np.zeros_like(m.torso)
    if identity.logo != "none":
        lx, ly, r = identity.logo_x, identity.logo_y, identity.logo_size
        dx, dy = (tx - lx) / r, (ty - ly) / (r * 2.2)
        if identity.logo == "square":
            logo = (np.abs(dx) < 1) & (np.abs(dy) < 1)
        elif identity.logo == "circle":
            logo = dx**2 + dy**2 < 1
        else:  # a horizontal bar
            logo = (np.abs(dx) < 2.2) & (np.abs(dy) < 0.45)
        logo &= m.torso
    return _Textures(top_tex, bot_tex, logo)


def _parts(identity: Identity, m: _Masks, tex: _Textures) -> list:
    """The parts in painting order: ``(mask, visible colour, infrared intensity field)``.

    The torso and the bottom have no single colour (``None``): their visible colour field
    comes from the texture in :func:`_paint_visible`.
    """
    parts = [
        (m.arms, np.asarray(identity.top_rgb), identity.top_heat * (0.5 + 0.5 * tex.top)),
        (m.torso, None, identity.top_heat * (0.4 + 0.6 * tex.top)),
        (m.bottom, None, identity.bottom_heat * (0.55 + 0.45 * tex.bottom)),
        (m.legs, np.asarray(identity.skin_rgb), identity.skin_heat),
        (m.head, np.asarray(identity.skin_rgb), identity.skin_heat),
        (m.hair, np.asarray(identity.hair_rgb), identity.hair_heat),
    ]
    parts.append((tex.logo, np.asarray(identity.logo_rgb), identity.logo_heat))
    if m.acc_front:
        parts.append((m.acc, np.asarray(identity.acc_rgb), identity.acc_heat))
    return parts


def _paint_visible(
    identity: Identity,
    parts: list,
    m: _Masks,
    tex: _Textures,
    camera: _Camera,
    p: _Pose,
    rng: np.random.Generator,
) -> np.ndarray:
    """The colour image as an ``(H, W, 3)`` float array (not yet clipped)."""
    yy, xx = p.yy, p.xx
    img = (
        camera.bg[None, None] * (1 - yy[..., None]) + camera.bg2[None, None] * yy[..., None]
    ).astype(np.float32)
    img += rng.normal(0, 0.04, size=(p.H, p.W, 1)) * np.sin(xx * 23 + camera.camid)[..., None]
    top_col = np.where(
        tex.top[..., None] > 0.5, np.asarray(identity.top_rgb), np.asarray(identity.top_rgb2)
    )
    bot_col = np.asarray(identity.bottom_rgb) * (0.5 + 0.5 * tex.bottom[..., None])
    for mask, colour, _ in parts:
        jitter = rng.uniform(0.85, 1.15)  # the same clothes never look exactly the same
        if mask is m.torso:
            img[mask] = top_col[mask] * jitter
        elif mask is m.bottom:
            img[mask] = bot_col[mask] * jitter
        else:
            img[mask] = colour * jitter
    shade = 0.85 + 0.15 * np.cos((xx - p.cx) * np.pi)  # soft lighting across the body
    img *= (camera.light * rng.uniform(0.85, 1.15) * shade)[..., None] * camera.tint[None, None]
    img += rng.normal(0, 0.02, size=img.shape)
    return img


def _paint_infrared(parts: list, camera: _Camera, p: _Pose, rng: np.random.Generator) -> np.ndarray:
    """The heat rendering as an ``(H, W, 3)`` float array of equal channels (not clipped)."""
    img = np.full((p.H, p.W), camera.ir_bg, dtype=np.float32) + 0.05 * p.yy
    for mask, _, heat in parts:
        jitter = rng.uniform(0.93, 1.07)
        img[mask] = (heat if np.isscalar(heat) else heat[mask]) * jitter
    img = img * rng.uniform(0.9, 1.05) + rng.uniform(-0.03, 0.03)  # sensor gain and offset
    img += rng.normal(0, 0.03, size=img.shape)
    return np.repeat(img[..., None], 3, axis=2)


def render(
    identity: Identity,
    modality: str,
    camid: int,
    index: int,
    *,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
) -> Image.Image:
    """Render one image of ``identity`` seen by camera ``camid``.

    Args:
        identity: the person, from :func:`make_identity`.
        modality: ``"vis"`` (colour) or ``"ir"`` (infrared heat rendering, 3 equal channels, as
            SYSU-MM01 stores its IR images).
        camid: camera number; sets background, lighting and the typical viewpoint.
        index: image number within (identity, camera); sets pose jitter and noise.
        height, width: image size in pixels.
        seed: data-set seed.

    Returns:
        An RGB ``PIL.Image`` of size ``(width, height)``.
    """
    if modality not in ("vis", "ir"):
        raise ValueError(f"modality must be 'vis' or 'ir', got {modality!r}")
    camera = _camera(seed, camid)
    # One generator per image; the stages draw from it in a fixed order: pose, then painting.
    rng = np.random.default_rng([seed, identity.pid, camid, index, 15485863])
    pose = _pose(identity, camera, rng, height, width)
    masks = _masks(identity, pose)
    tex = _textures(identity, pose, masks)
    parts = _parts(identity, masks, tex)
    if modality == "vis":
        img = _paint_visible(identity, parts, masks, tex, camera, pose, rng)
    else:
        img = _paint_infrared(parts, camera, pose, rng)
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if modality == "ir":
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.6))))
    return out


def sample_pair(
    pid: int = 0, seed: int = 0, height: int = 128, width: int = 64
) -> tuple[Image.Image, Image.Image]:
    """One visible and one infrared image of the same synthetic identity (for notebooks)."""
    ident = make_identity(pid, seed)
    vis = render(ident, "vis", SYSU_RGB_CAMERAS[0], 0, height=height, width=width, seed=seed)
    ir = render(ident, "ir", SYSU_IR_CAMERAS[0], 0, height=height, width=width, seed=seed)
    return vis, ir


# ---------------------------------------------------------------------------------------------
# Writing the layouts. Folders are only written when they are missing, empty or marked as
# generated here (see _claim_folder); the marker file is written last.
# ---------------------------------------------------------------------------------------------

#: Bump when the renderer or a layout changes what the generators write: a folder marked
#: with another version is regenerated instead of reused.
GENERATOR_VERSION = 2
#: Written last into a complete synthetic folder: the generator, its version and parameters.
MARKER = ".csetgraph-synthetic.json"
#: Written first and removed last: a folder holding only this one is an interrupted generation.
PARTIAL_MARKER = ".csetgraph-synthetic.partial"
_MARKERS = (MARKER, PARTIAL_MARKER)


def _write_id_file(path: Path, pids: list[int]) -> None:
    path.write_text(",".join(str(p) for p in pids) + "\n")


def _write_list(path: Path, lines: list[tuple[str, int]]) -> None:
    """An idx file in the RegDB/LLCM format: one ``relative/path label`` per line."""
    path.write_text("".join(f"{rel} {label}\n" for rel, label in lines))


@dataclass(frozen=True)
class _Size:
    """How many identities and images a generator writes, and how large the images are."""

    num_train_ids: int
    num_val_ids: int
    num_test_ids: int
    images_per_camera: int
    height: int
    width: int
    seed: int

    def __post_init__(self) -> None:
        if (
            min(self.num_train_ids + self.num_val_ids, self.num_test_ids, self.images_per_camera)
            < 1
            or self.num_val_ids < 0
        ):
            raise ValueError("need at least one train id, one test id and one image per camera")

    @property
    def total(self) -> int:
        return self.num_train_ids + self.num_val_ids + self.num_test_ids


def _shuffled_ids(size: _Size, seed: int) -> list[int]:
    """Identities ``1 .. total`` in a seeded random order (split membership is not pid order)."""
    pids = list(range(1, size.total + 1))
    random.Random(seed).shuffle(pids)
    return pids


def _render_images(
    root: Path, folder: str, ident: Identity, modality: str, camid: int, names, size: _Size
) -> list[str]:
    """Render ``size.images_per_camera`` images into ``root/folder``; their relative paths.

    ``names(n)`` is the file name of image ``n`` (1-based), as the layout numbers it.
    """
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(size.images_per_camera):
        rel = f"{folder}/{names(n + 1)}"
        img = render(
            ident, modality, camid, n, height=size.height, width=size.width, seed=size.seed
        )
        img.save(root / rel, quality=92)
        paths.append(rel)
    return paths


def _progress(size: _Size, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(range(1, size.total + 1), desc=desc, disable=not progress)


def renderer_digest() -> str:
    """A digest of the renderer's source (identities, patterns, cameras, rendering).

    Recorded in the marker beside :data:`GENERATOR_VERSION`, so a folder rendered by an
    older renderer is regenerated even if nobody bumped the version.
    """
    parts = [_PATTERNS, _ACCESSORIES, _HAIR, _LOGOS, _MATERIALS, _PALETTE]
    try:
        stages = (make_identity, _pattern, _camera_rng, _camera, _pose, _head_and_hair)
        stages += (_bottom_and_legs, _accessory, _masks, _textures, _parts)
        stages += (_paint_visible, _paint_infrared, render)
        parts += [inspect.getsource(f) for f in stages]
    except OSError:  # no source shipped (a frozen install): the version alone decides
        parts.append("no-source")
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


#: The marker's record of what was generated: a digest of every file's path and content.
#: Markers written before it record ``"content"``, a digest of paths and sizes only.
CONTENT_KEY = "files_sha256"
_OLD_CONTENT_KEY = "content"


def _files(root: Path) -> list[Path]:
    """Every file under ``root`` but the markers."""
    return [
        Path(folder) / name
        for folder, _, names in os.walk(root)
        for name in names
        if not (folder == str(root) and name in _MARKERS)
    ]


def _content_digest(root: Path) -> str:
    """A digest of every file's relative path and sha256 under ``root`` (markers excluded),
    so an image edited in place, even to the same size, changes it."""
    entries = sorted(
        (p.relative_to(root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in _files(root)
    )
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


def _size_digest(root: Path) -> str:
    """The digest older markers recorded: every file's relative path and size."""
    entries = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in _files(root))
    text = json.dumps(entries, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unchanged(root: Path, marker: dict) -> bool:
    """Whether the folder still holds what its marker says was generated."""
    if CONTENT_KEY in marker:
        return marker[CONTENT_KEY] == _content_digest(root)
    # A marker from before content digests: paths and sizes are all it can tell.
    return marker.get(_OLD_CONTENT_KEY) == _size_digest(root)


def read_marker(root: str | Path) -> dict | None:
    """The marker of a folder generated here (generator, version, data set, parameters)."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _foreign_folder_error(root: Path, dataset: str, entries: list[str]) -> DataFolderError:
    shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
    return DataFolderError(
        f"refusing to write a synthetic {dataset} data set into {str(root)!r}: the folder "
        f"holds other files ({shown}) and no {MARKER} marker, so it may be a real data set. "
        "Synthetic data is generated only into a missing or empty folder, or one it generated "
        "before. Either point data.root at your real data set with "
        "data.synthetic.enabled=false (configs/sysu_mm01.yaml, regdb.yaml and llcm.yaml do), "
        "or point data.root at an empty folder. A synthetic folder written by an older "
        "csetgraph has no marker: delete it to regenerate it."
    )


def _claim_folder(root: Path, wanted: dict) -> bool:
    """Decide whether ``root`` may be (re)generated; ``False``: it already holds ``wanted``.

    Missing or empty: generate. Marked complete with the same generator, version, data set
    and parameters: reuse. Marked complete with others: regenerate, but only if its
    content is still what was generated (else :class:`DataFolderError`). Marked partial
    (an interrupted generation): regenerate. Anything else is somebody else's folder:
    :class:`DataFolderError`, and nothing is written.
    """
    entries = [p.name for p in root.iterdir()] if root.is_dir() else []
    if root.exists() and not root.is_dir():
        raise DataFolderError(f"{str(root)!r} is a file; data.root must be a folder")
    marker = read_marker(root)
    if marker is not None:
        recorded = {k: v for k, v in marker.items() if k not in (CONTENT_KEY, _OLD_CONTENT_KEY)}
        if recorded == wanted:
            # Complete; a partial marker left beside it is from a crash after the last write.
            (root / PARTIAL_MARKER).unlink(missing_ok=True)
            return False
        if not _unchanged(root, marker):
            raise DataFolderError(
                f"{str(root)!r} was generated as synthetic data ({MARKER}) but its files "
                "changed since, so csetgraph will not regenerate it. Delete the folder to "
                "regenerate it, or point data.root at an empty folder."
            )
        log.warning(
            "regenerating the synthetic data set in %s: it was generated with %s, wanted %s",
            root,
            {k: v for k, v in recorded.items() if wanted.get(k) != v},
            {k: v for k, v in wanted.items() if recorded.get(k) != v},
        )
    elif entries and PARTIAL_MARKER not in entries:
        raise _foreign_folder_error(root, wanted["dataset"], entries)
    return True


def _clear(root: Path) -> None:
    """Remove the contents of a folder generated here (the folder itself stays)."""
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        elif child.name != PARTIAL_MARKER:
            child.unlink()


def _write_marker(root: Path, content: dict) -> None:
    """Write the marker atomically (:func:`csetgraph.files.write_atomic`)."""
    write_atomic(root / MARKER, json.dumps(content, indent=2, sort_keys=True))


def _generate(root: str | Path, dataset: str, size: _Size, write, progress: bool) -> Path:
    """Run ``write(root, size, progress)`` on a folder :func:`_claim_folder` allows.

    The partial marker goes first, the complete marker (with a digest of what was written)
    last, so a folder is either complete and marked, or recognisably unfinished.
    """
    root = Path(root)
    wanted = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "renderer": renderer_digest(),
        "dataset": dataset,
        "params": dataclasses.asdict(size),
    }
    if not _claim_folder(root, wanted):
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / PARTIAL_MARKER).write_text(json.dumps(wanted) + "\n")
    _clear(root)
    write(root, size, progress)
    _write_marker(root, {**wanted, CONTENT_KEY: _content_digest(root)})
    (root / PARTIAL_MARKER).unlink()
    return root


def _write_sysu_mm01(root: Path, size: _Size, progress: bool) -> None:
    pids = _shuffled_ids(size, size.seed)
    cut = size.num_train_ids + size.num_val_ids
    train, val, test = (
        sorted(pids[: size.num_train_ids]),
        sorted(pids[size.num_train_ids : cut]),
        sorted(pids[cut:]),
    )
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for pid in _progress(size, "synthetic SYSU-MM01", progress):
        ident = make_identity(pid, size.seed)
        for camid in sorted(SYSU_RGB_CAMERAS + SYSU_IR_CAMERAS):
            modality = "ir" if camid in SYSU_IR_CAMERAS else "vis"
            folder = f"cam{camid}/{pid:04d}"
            _render_images(root, folder, ident, modality, camid, "{:04d}.jpg".format, size)
    for name, ids in (("train", train), ("val", val), ("test", test)):
        _write_id_file(root / "exp" / f"{name}_id.txt", ids)


def generate_sysu_mm01(
    root: str | Path,
    *,
    num_train_ids: int = _DEFAULT.num_train_ids,
    num_val_ids: int = _DEFAULT.num_val_ids,
    num_test_ids: int = _DEFAULT.num_test_ids,
    images_per_camera: int = _DEFAULT.images_per_camera,
    height: int = _DEFAULT.height,
    width: int = _DEFAULT.width,
    seed: int = _DEFAULT.seed,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set in the raw SYSU-MM01 layout.

    Layout (as the real data set)::

        root/cam{1..6}/{pid:04d}/{n:04d}.jpg      RGB cameras 1, 2, 4, 5; IR cameras 3, 6
        root/exp/train_id.txt, val_id.txt, test_id.txt   one comma-separated line of pids
        root/.csetgraph-synthetic.json            the marker: generator, version, parameters

    Identities are numbered from 1 and assigned to the splits in a seeded random order, so
    that split membership is not the pid order. Every identity appears in every camera.

    ``root`` must be missing, empty, or a folder generated here: one generated with the
    same parameters is reused as it is, one with other parameters regenerated, and any
    other folder refused with :class:`~csetgraph.errors.DataFolderError` (nothing written).

    Returns:
        The root folder.
    """
    size = _Size(num_train_ids, num_val_ids, num_test_ids, images_per_camera, height, width, seed)
    if num_train_ids < 1:
        raise ValueError("need at least one train id, one test id and one image per camera")
    return _generate(root, "sysu_mm01", size, _write_sysu_mm01, progress)


#: RegDB has one visible and one thermal camera; the renderer's camera numbers for them.
REGDB_VISIBLE_CAMERA = 1
REGDB_THERMAL_CAMERA = 2
#: Number of train/test splits RegDB distributes (``idx/*_{1..10}.txt``).
REGDB_TRIALS = 10
_REGDB_SIDES = (("Visible", "vis", REGDB_VISIBLE_CAMERA), ("Thermal", "ir", REGDB_THERMAL_CAMERA))


def _write_regdb(root: Path, size: _Size, progress: bool) -> None:
    files: dict[int, list[list[str]]] = {}
    for pid in _progress(size, "synthetic RegDB", progress):
        ident = make_identity(pid, size.seed)
        files[pid] = [
            _render_images(
                root, f"{folder}/{pid}", ident, modality, camid, "{:04d}.jpg".format, size
            )
            for folder, modality, camid in _REGDB_SIDES
        ]
    num_train = size.num_train_ids + size.num_val_ids
    idx = root / "idx"
    idx.mkdir()
    for t in range(1, REGDB_TRIALS + 1):
        pids = _shuffled_ids(size, size.seed * 1000 + t)
        for split, chosen in (("train", pids[:num_train]), ("test", pids[num_train:])):
            for side, name in enumerate(("visible", "thermal")):
                lines = [(rel, pid - 1) for pid in sorted(chosen) for rel in files[pid][side]]
                _write_list(idx / f"{split}_{name}_{t}.txt", lines)


def generate_regdb(
    root: str | Path,
    *,
    num_train_ids: int = _DEFAULT.num_train_ids,
    num_val_ids: int = _DEFAULT.num_val_ids,
    num_test_ids: int = _DEFAULT.num_test_ids,
    images_per_camera: int = 10,
    height: int = _DEFAULT.height,
    width: int = _DEFAULT.width,
    seed: int = _DEFAULT.seed,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set in the RegDB layout.

    Layout (as the real data set)::

        root/Visible/{pid}/{n:04d}.jpg     one visible camera
        root/Thermal/{pid}/{n:04d}.jpg     one thermal camera
        root/idx/{train,test}_{visible,thermal}_{t}.txt   t = 1..10, lines "relative/path label"
        root/.csetgraph-synthetic.json     the marker: generator, version, parameters

    Every identity has ``images_per_camera`` visible and as many thermal images (the real
    RegDB: 412 identities with 10 + 10). Each of the 10 trials draws its own random split
    (seeded by ``(seed, t)``): ``num_train_ids + num_val_ids`` training identities and the
    ``num_test_ids`` others for testing (real RegDB: 206 / 206). RegDB has no validation
    split on disk: :mod:`csetgraph.data.regdb` holds out part of each trial's training ids
    for model selection, which is the role ``num_val_ids`` plays here. Labels are the
    0-based identity numbers, the same in every trial.

    ``root`` must be missing, empty, or a folder generated here (see
    :func:`generate_sysu_mm01`).

    Returns:
        The root folder.
    """
    size = _Size(num_train_ids, num_val_ids, num_test_ids, images_per_camera, height, width, seed)
    return _generate(root, "regdb", size, _write_regdb, progress)


#: LLCM's nine cameras record visible light by day and near-infrared light by night. Its
#: test set has no near-infrared images from camera 3; the synthetic set keeps that.
LLCM_CAMERAS = tuple(range(1, 10))
LLCM_NIR_TEST_CAMERAS = (1, 2, 4, 5, 6, 7, 8, 9)


def _write_llcm(root: Path, size: _Size, progress: bool) -> None:
    pids = _shuffled_ids(size, size.seed)
    num_train = size.num_train_ids + size.num_val_ids
    train, test = set(pids[:num_train]), sorted(pids[num_train:])
    lists: dict[str, list[tuple[str, int]]] = {"vis": [], "nir": []}
    for pid in _progress(size, "synthetic LLCM", progress):
        ident = make_identity(pid, size.seed)
        is_train = pid in train
        rng = random.Random(size.seed * 100003 + pid)
        for modality, kind in (("vis", "vis"), ("nir", "ir")):
            cams = LLCM_CAMERAS if is_train or modality == "vis" else LLCM_NIR_TEST_CAMERAS
            prefix = f"{'train' if is_train else 'test'}_{modality}"
            for camid in sorted(rng.sample(cams, rng.randint(2, 4))):
                names = f"{pid:04d}_c{camid:02d}_{{:04d}}.jpg".format
                folder = f"{prefix}/cam{camid}/{pid:04d}"
                rels = _render_images(root, folder, ident, kind, camid, names, size)
                if is_train:
                    lists[modality].extend((rel, pid) for rel in rels)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    _write_list(root / "idx" / "train_vis.txt", lists["vis"])
    _write_list(root / "idx" / "train_nir.txt", lists["nir"])
    _write_id_file(root / "idx" / "test_id.txt", test)


def generate_llcm(
    root: str | Path,
    *,
    num_train_ids: int = _DEFAULT.num_train_ids,
    num_val_ids: int = _DEFAULT.num_val_ids,
    num_test_ids: int = _DEFAULT.num_test_ids,
    images_per_camera: int = _DEFAULT.images_per_camera,
    height: int = _DEFAULT.height,
    width: int = _DEFAULT.width,
    seed: int = _DEFAULT.seed,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set in the LLCM layout.

    Layout (as the real data set)::

        root/train_vis/cam{c}/{pid:04d}/*.jpg, root/train_nir/cam{c}/{pid:04d}/*.jpg
        root/test_vis/cam{1..9}/{pid:04d}/*.jpg
        root/test_nir/cam{1,2,4..9}/{pid:04d}/*.jpg        (no camera 3, as in LLCM)
        root/idx/train_vis.txt, train_nir.txt    lines "relative/path label"
        root/idx/test_id.txt                     one comma-separated line of pids
        root/.csetgraph-synthetic.json           the marker: generator, version, parameters

    Each identity is seen by a random subset of 2 to 4 of the nine cameras in each modality
    (drawn independently per modality), so identities miss cameras, as in LLCM; camera
    ``c`` renders with the same background in both modalities (one physical camera) and
    images are named ``{pid:04d}_c{c:02d}_{n:04d}.jpg``. Training uses
    ``num_train_ids + num_val_ids`` identities (the LLCM reader holds out part of them for
    model selection, which is the role ``num_val_ids`` plays here); labels in the idx files
    are the identity numbers.

    ``root`` must be missing, empty, or a folder generated here (see
    :func:`generate_sysu_mm01`).

    Returns:
        The root folder.
    """
    size = _Size(num_train_ids, num_val_ids, num_test_ids, images_per_camera, height, width, seed)
    return _generate(root, "llcm", size, _write_llcm, progress)
