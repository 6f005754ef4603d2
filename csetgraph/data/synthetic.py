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

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

#: SYSU-MM01 camera roles: cameras 1, 2, 4, 5 are RGB, 3 and 6 are near-infrared.
SYSU_RGB_CAMERAS = (1, 2, 4, 5)
SYSU_IR_CAMERAS = (3, 6)

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
        # dye looks: the level is drawn around the colour's luminance, then quantised.
        lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        target = 0.7 * lum + 0.3 * float(rng.uniform(0.2, 1.0))
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
    cam = _camera_rng(seed, camid)
    cam_bg = cam.uniform(0.15, 0.85, size=3)
    cam_bg2 = cam.uniform(0.15, 0.85, size=3)
    cam_light = cam.uniform(0.7, 1.2)
    cam_tint = cam.uniform(0.85, 1.15, size=3)
    cam_scale = cam.uniform(0.85, 1.05)
    cam_view = int(cam.integers(0, 3))  # 0 front, 1 back, 2 side
    cam_ir_bg = cam.uniform(0.05, 0.35)
    rng = np.random.default_rng([seed, identity.pid, camid, index, 15485863])

    H, W = height, width
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    yy /= H
    xx /= W
    view = cam_view if rng.random() < 0.7 else int(rng.integers(0, 3))
    scale = cam_scale * rng.uniform(0.92, 1.06)
    cx = 0.5 + rng.uniform(-0.08, 0.08)
    top_y = 0.5 - identity.height * scale / 2 + rng.uniform(-0.04, 0.04)
    body_h = identity.height * scale
    head_r = identity.head * scale
    side = 0.65 if view == 2 else 1.0
    shoulder = identity.shoulder * scale * side

    # Part masks (head, hair, torso, legs, accessory) on normalised coordinates.
    head_cy = top_y + head_r * 2.0 * (W / H) * 0.9
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
        tail_x = cx + (head_r * 0.9 if view == 2 else 0.0)
        hair = (hair_top & (yy < head_cy)) | (
            (np.abs(xx - tail_x) < head_r * 0.35)
            & (yy > head_cy)
            & (yy < head_cy + head_r * 2.5 * W / H)
        )
    if view == 1:  # seen from the back: the hair covers the head
        hair = hair | (head & (identity.hair != "bald"))
    torso_top = head_cy + head_r * W / H * 0.95
    leg_len = body_h * identity.leg_ratio
    torso_bot = top_y + body_h - leg_len
    t = (yy - torso_top) / max(torso_bot - torso_top, 1e-3)
    torso_half = shoulder / 2 * (1.0 - 0.18 * t)
    torso = (yy >= torso_top) & (yy < torso_bot) & (np.abs(xx - cx) < torso_half)
    arms = (
        (yy >= torso_top + 0.01)
        & (yy < torso_bot + 0.05)
        & (np.abs(xx - cx) >= torso_half)
        & (np.abs(xx - cx) < torso_half + 0.07 * scale)
    )
    leg_bot = top_y + body_h
    lt = (yy - torso_bot) / max(leg_len, 1e-3)
    if identity.bottom_skirt:
        skirt_half = shoulder / 2 * (0.8 + 0.35 * lt)
        bottom = (yy >= torso_bot) & (lt < 0.55) & (np.abs(xx - cx) < skirt_half)
        legs = (lt >= 0.55) & (yy < leg_bot) & (np.abs(np.abs(xx - cx) - shoulder * 0.18) < 0.05)
    else:
        gap = 0.02 + 0.03 * lt
        leg_w = shoulder * 0.2 * side
        bottom = (
            (yy >= torso_bot)
            & (yy < leg_bot)
            & (np.abs(xx - cx) > gap * side)
            & (np.abs(xx - cx) < gap * side + leg_w)
        )
        legs = np.zeros_like(bottom)
    acc = np.zeros_like(head)
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

    # Texture coordinates local to each part, so patterns move with the body.
    ty = (yy - torso_top) / max(torso_bot - torso_top, 1e-3)
    tx = (xx - cx) / max(shoulder, 1e-3)
    top_tex = _pattern(identity.top_pattern, identity.top_freq, ty, tx)
    bot_tex = _pattern(identity.bottom_pattern, 4.0, lt, tx)

    logo = np.zeros_like(torso)
    if identity.logo != "none":
        lx, ly, r = identity.logo_x, identity.logo_y, identity.logo_size
        dx, dy = (tx - lx) / r, (ty - ly) / (r * 2.2)
        if identity.logo == "square":
            logo = (np.abs(dx) < 1) & (np.abs(dy) < 1)
        elif identity.logo == "circle":
            logo = dx**2 + dy**2 < 1
        else:  # a horizontal bar
            logo = (np.abs(dx) < 2.2) & (np.abs(dy) < 0.45)
        logo &= torso

    parts = [  # (mask, vis colour field, ir intensity field)
        (arms, np.asarray(identity.top_rgb), identity.top_heat * (0.5 + 0.5 * top_tex)),
        (torso, None, identity.top_heat * (0.4 + 0.6 * top_tex)),
        (bottom, None, identity.bottom_heat * (0.55 + 0.45 * bot_tex)),
        (legs, np.asarray(identity.skin_rgb), identity.skin_heat),
        (head, np.asarray(identity.skin_rgb), identity.skin_heat),
        (hair, np.asarray(identity.hair_rgb), identity.hair_heat),
    ]
    parts.append((logo, np.asarray(identity.logo_rgb), identity.logo_heat))
    if acc_front:
        parts.append((acc, np.asarray(identity.acc_rgb), identity.acc_heat))

    if modality == "vis":
        img = (
            cam_bg[None, None] * (1 - yy[..., None]) + cam_bg2[None, None] * yy[..., None]
        ).astype(np.float32)
        img += rng.normal(0, 0.04, size=(H, W, 1)) * np.sin(xx * 23 + camid)[..., None]
        top_col = np.where(
            top_tex[..., None] > 0.5, np.asarray(identity.top_rgb), np.asarray(identity.top_rgb2)
        )
        bot_col = np.asarray(identity.bottom_rgb) * (0.5 + 0.5 * bot_tex[..., None])
        for mask, colour, _ in parts:
            jitter = rng.uniform(0.85, 1.15)  # the same clothes never look exactly the same
            if mask is torso:
                img[mask] = top_col[mask] * jitter
            elif mask is bottom:
                img[mask] = bot_col[mask] * jitter
            else:
                img[mask] = colour * jitter
        shade = 0.85 + 0.15 * np.cos((xx - cx) * np.pi)  # soft lighting across the body
        img *= (cam_light * rng.uniform(0.85, 1.15) * shade)[..., None] * cam_tint[None, None]
        img += rng.normal(0, 0.02, size=img.shape)
    else:
        img = np.full((H, W), cam_ir_bg, dtype=np.float32) + 0.05 * yy
        for mask, _, heat in parts:
            jitter = rng.uniform(0.85, 1.15)
            img[mask] = (heat if np.isscalar(heat) else heat[mask]) * jitter
        img = img * rng.uniform(0.85, 1.1) + rng.uniform(-0.05, 0.05)
        img += rng.normal(0, 0.04, size=img.shape)
        img = np.repeat(img[..., None], 3, axis=2)
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if modality == "ir":
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 0.9))))
    return out


def sample_pair(
    pid: int = 0, seed: int = 0, height: int = 128, width: int = 64
) -> tuple[Image.Image, Image.Image]:
    """One visible and one infrared image of the same synthetic identity (for notebooks)."""
    ident = make_identity(pid, seed)
    vis = render(ident, "vis", SYSU_RGB_CAMERAS[0], 0, height=height, width=width, seed=seed)
    ir = render(ident, "ir", SYSU_IR_CAMERAS[0], 0, height=height, width=width, seed=seed)
    return vis, ir


def _write_id_file(path: Path, pids: list[int]) -> None:
    path.write_text(",".join(str(p) for p in pids) + "\n")


def generate_sysu_mm01(
    root: str | Path,
    *,
    num_train_ids: int = 96,
    num_val_ids: int = 24,
    num_test_ids: int = 48,
    images_per_camera: int = 6,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set in the raw SYSU-MM01 layout.

    Layout (as the real data set)::

        root/cam{1..6}/{pid:04d}/{n:04d}.jpg      RGB cameras 1, 2, 4, 5; IR cameras 3, 6
        root/exp/train_id.txt, val_id.txt, test_id.txt   one comma-separated line of pids

    Identities are numbered from 1 and assigned to the splits in a seeded random order, so
    that split membership is not the pid order. Every identity appears in every camera.

    Returns:
        The root folder.
    """
    from tqdm import tqdm

    root = Path(root)
    total = num_train_ids + num_val_ids + num_test_ids
    if min(num_train_ids, num_test_ids, images_per_camera) < 1 or num_val_ids < 0:
        raise ValueError("need at least one train id, one test id and one image per camera")
    pids = list(range(1, total + 1))
    random.Random(seed).shuffle(pids)
    train = sorted(pids[:num_train_ids])
    val = sorted(pids[num_train_ids : num_train_ids + num_val_ids])
    test = sorted(pids[num_train_ids + num_val_ids :])
    (root / "exp").mkdir(parents=True, exist_ok=True)
    cams = sorted(SYSU_RGB_CAMERAS + SYSU_IR_CAMERAS)
    for pid in tqdm(range(1, total + 1), desc="synthetic SYSU-MM01", disable=not progress):
        ident = make_identity(pid, seed)
        for camid in cams:
            modality = "ir" if camid in SYSU_IR_CAMERAS else "vis"
            folder = root / f"cam{camid}" / f"{pid:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(images_per_camera):
                img = render(ident, modality, camid, n, height=height, width=width, seed=seed)
                img.save(folder / f"{n + 1:04d}.jpg", quality=92)
    # The split files go last: their presence marks a complete data set.
    _write_id_file(root / "exp" / "train_id.txt", train)
    _write_id_file(root / "exp" / "val_id.txt", val)
    _write_id_file(root / "exp" / "test_id.txt", test)
    return root


#: RegDB has one visible and one thermal camera; the renderer's camera numbers for them.
REGDB_VISIBLE_CAMERA = 1
REGDB_THERMAL_CAMERA = 2
#: Number of train/test splits RegDB distributes (``idx/*_{1..10}.txt``).
REGDB_TRIALS = 10


def _write_list(path: Path, lines: list[tuple[str, int]]) -> None:
    """An idx file in the RegDB/LLCM format: one ``relative/path label`` per line."""
    path.write_text("".join(f"{rel} {label}\n" for rel, label in lines))


def generate_regdb(
    root: str | Path,
    *,
    num_train_ids: int = 96,
    num_val_ids: int = 24,
    num_test_ids: int = 48,
    images_per_camera: int = 10,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set in the RegDB layout.

    Layout (as the real data set)::

        root/Visible/{pid}/{n:04d}.jpg     one visible camera
        root/Thermal/{pid}/{n:04d}.jpg     one thermal camera
        root/idx/{train,test}_{visible,thermal}_{t}.txt   t = 1..10, lines "relative/path label"

    Every identity has ``images_per_camera`` visible and as many thermal images (the real
    RegDB: 412 identities with 10 + 10). Each of the 10 trials draws its own random split
    (seeded by ``(seed, t)``): ``num_train_ids + num_val_ids`` training identities and the
    ``num_test_ids`` others for testing (real RegDB: 206 / 206). RegDB has no validation
    split on disk: :mod:`csetgraph.data.regdb` holds out part of each trial's training ids
    for model selection, which is the role ``num_val_ids`` plays here. Labels are the
    0-based identity numbers, the same in every trial.

    Returns:
        The root folder.
    """
    from tqdm import tqdm

    root = Path(root)
    num_train = num_train_ids + num_val_ids
    if min(num_train, num_test_ids, images_per_camera) < 1 or num_val_ids < 0:
        raise ValueError("need at least one train id, one test id and one image per camera")
    total = num_train + num_test_ids
    files: dict[int, tuple[list[str], list[str]]] = {}
    for pid in tqdm(range(1, total + 1), desc="synthetic RegDB", disable=not progress):
        ident = make_identity(pid, seed)
        names = ([], [])
        for side, (folder, modality, camid) in enumerate(
            (("Visible", "vis", REGDB_VISIBLE_CAMERA), ("Thermal", "ir", REGDB_THERMAL_CAMERA))
        ):
            (root / folder / str(pid)).mkdir(parents=True, exist_ok=True)
            for n in range(images_per_camera):
                rel = f"{folder}/{pid}/{n + 1:04d}.jpg"
                img = render(ident, modality, camid, n, height=height, width=width, seed=seed)
                img.save(root / rel, quality=92)
                names[side].append(rel)
        files[pid] = names
    # The idx folder goes last: its presence marks a complete data set.
    tmp = root / "idx.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    for t in range(1, REGDB_TRIALS + 1):
        pids = list(range(1, total + 1))
        random.Random(seed * 1000 + t).shuffle(pids)
        for split, chosen in (("train", pids[:num_train]), ("test", pids[num_train:])):
            for side, name in enumerate(("visible", "thermal")):
                lines = [(rel, pid - 1) for pid in sorted(chosen) for rel in files[pid][side]]
                _write_list(tmp / f"{split}_{name}_{t}.txt", lines)
    tmp.rename(root / "idx")
    return root


#: LLCM's nine cameras record visible light by day and near-infrared light by night. Its
#: test set has no near-infrared images from camera 3; the synthetic set keeps that.
LLCM_CAMERAS = tuple(range(1, 10))
LLCM_NIR_TEST_CAMERAS = (1, 2, 4, 5, 6, 7, 8, 9)


def generate_llcm(
    root: str | Path,
    *,
    num_train_ids: int = 96,
    num_val_ids: int = 24,
    num_test_ids: int = 48,
    images_per_camera: int = 6,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set in the LLCM layout.

    Layout (as the real data set)::

        root/train_vis/cam{c}/{pid:04d}/*.jpg, root/train_nir/cam{c}/{pid:04d}/*.jpg
        root/test_vis/cam{1..9}/{pid:04d}/*.jpg
        root/test_nir/cam{1,2,4..9}/{pid:04d}/*.jpg        (no camera 3, as in LLCM)
        root/idx/train_vis.txt, train_nir.txt    lines "relative/path label"
        root/idx/test_id.txt                     one comma-separated line of pids

    Each identity is seen by a random subset of 2 to 4 of the nine cameras in each modality
    (drawn independently per modality), so identities miss cameras, as in LLCM; camera
    ``c`` renders with the same background in both modalities (one physical camera) and
    images are named ``{pid:04d}_c{c:02d}_{n:04d}.jpg``. Training uses
    ``num_train_ids + num_val_ids`` identities (the LLCM reader holds out part of them for
    model selection, which is the role ``num_val_ids`` plays here); labels in the idx files
    are the identity numbers.

    Returns:
        The root folder.
    """
    from tqdm import tqdm

    root = Path(root)
    num_train = num_train_ids + num_val_ids
    if min(num_train, num_test_ids, images_per_camera) < 1 or num_val_ids < 0:
        raise ValueError("need at least one train id, one test id and one image per camera")
    total = num_train + num_test_ids
    pids = list(range(1, total + 1))
    random.Random(seed).shuffle(pids)
    train, test = sorted(pids[:num_train]), sorted(pids[num_train:])
    lists: dict[str, list[tuple[str, int]]] = {"vis": [], "nir": []}
    for pid in tqdm(range(1, total + 1), desc="synthetic LLCM", disable=not progress):
        ident = make_identity(pid, seed)
        is_train = pid in train
        rng = random.Random(seed * 100003 + pid)
        for modality, kind in (("vis", "vis"), ("nir", "ir")):
            cams = LLCM_CAMERAS if is_train or modality == "vis" else LLCM_NIR_TEST_CAMERAS
            chosen = sorted(rng.sample(cams, rng.randint(2, 4)))
            prefix = f"{'train' if is_train else 'test'}_{modality}"
            for camid in chosen:
                folder = root / prefix / f"cam{camid}" / f"{pid:04d}"
                folder.mkdir(parents=True, exist_ok=True)
                for n in range(images_per_camera):
                    name = f"{pid:04d}_c{camid:02d}_{n + 1:04d}.jpg"
                    img = render(ident, kind, camid, n, height=height, width=width, seed=seed)
                    img.save(folder / name, quality=92)
                    if is_train:
                        lists[modality].append((f"{prefix}/cam{camid}/{pid:04d}/{name}", pid))
    (root / "idx").mkdir(parents=True, exist_ok=True)
    _write_list(root / "idx" / "train_vis.txt", lists["vis"])
    _write_list(root / "idx" / "train_nir.txt", lists["nir"])
    # test_id.txt goes last: its presence marks a complete data set.
    _write_id_file(root / "idx" / "test_id.txt", test)
    return root
