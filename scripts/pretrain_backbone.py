#!/usr/bin/env python
"""Pretrain the tiny synthetic ViT backbone: the synthetic benchmark's "ImageNet weights".

In the paper both encoders start from ImageNet weights. The synthetic recipe starts from this
backbone instead, pretrained on synthetic persons that the benchmark never uses: another
data-set seed (so other faces, clothes and cameras) and identity numbers far above the
default set's. It is the analogue of ImageNet pretraining, not a peek at the benchmark.

Objectives (``--objective``):

* ``vis-id``: identity classification on visible images only (ImageNet is single-modality);
* ``both-id``: identity classification on visible and infrared images, one classifier;
* ``both-id-attr`` (the shipped weights): ``both-id`` plus the attributes the renderer drew,
  a cheap multi-label signal: clothing pattern, skirt, trouser pattern, accessory, hair,
  print shape and body proportions on both modalities; clothing and hair colours on visible
  images only; infrared material levels on infrared images only.

The run is deterministic for a given command (images rendered in memory from seeds, one
generator for the batches; use the same ``--threads`` to reproduce the bytes). The output is
a ``.safetensors`` file in timm's key layout (``patch_embed.proj.weight``, ``pos_embed``,
``blocks.0.attn.qkv.weight`` ...), loadable through ``model.pretrained=<path>``.

    python scripts/pretrain_backbone.py --overwrite              # remake the shipped weights
    python scripts/pretrain_backbone.py --objective vis-id --epochs 4 --out /tmp/vis.safetensors

An existing ``--out`` file (by default the shipped ``weights/synthetic_vit_tiny.safetensors``)
is refused before anything is rendered unless ``--overwrite`` is given, so a short trial run
never replaces the shipped backbone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from csetgraph.data.synthetic import (
    _ACCESSORIES,
    _HAIR,
    _LOGOS,
    _MATERIALS,
    _PALETTE,
    _PATTERNS,
    SYSU_IR_CAMERAS,
    SYSU_RGB_CAMERAS,
    Identity,
    make_identity,
    render,
)
from csetgraph.errors import ConfigError, DataFolderError, run_command
from csetgraph.files import atomic_path
from csetgraph.models.encoder import ViTEncoder

OBJECTIVES = ("vis-id", "both-id", "both-id-attr")
#: The pretraining set's data-set seed and first identity number: the default benchmark uses
#: seed 0 and identities 1..372, so neither its people nor its cameras occur here.
PRETRAIN_SEED = 20261130
FIRST_PID = 100_001
_BOTTOM_PATTERNS = ("solid", "hstripes", "vstripes")


@dataclass
class PretrainSet:
    """Rendered images (uint8, ``(M, 3, H, W)``) with identity, modality and attribute labels."""

    images: torch.Tensor
    labels: torch.Tensor  # (M,) identity index 0..num_ids-1
    is_ir: torch.Tensor  # (M,) bool
    attributes: dict[str, torch.Tensor]  # name -> (M,) class index, or (M, k) float targets


def _palette_index(rgb) -> int:
    return min(
        range(len(_PALETTE)),
        key=lambda i: sum(abs(a - b) for a, b in zip(_PALETTE[i], rgb, strict=True)),
    )


def identity_attributes(ident: Identity) -> dict[str, int | list[float]]:
    """The attributes the renderer drew for ``ident``, as class indices (and a shape vector)."""
    return {
        "top_pattern": _PATTERNS.index(ident.top_pattern),
        "skirt": int(ident.bottom_skirt),
        "bottom_pattern": _BOTTOM_PATTERNS.index(ident.bottom_pattern),
        "accessory": _ACCESSORIES.index(ident.accessory),
        "hair": _HAIR.index(ident.hair),
        "logo": _LOGOS.index(ident.logo),
        "top_colour": _palette_index(ident.top_rgb),
        "bottom_colour": _palette_index(ident.bottom_rgb),
        "hair_colour": _palette_index(ident.hair_rgb),
        "top_material": _MATERIALS.index(ident.top_heat),
        "bottom_material": _MATERIALS.index(ident.bottom_heat),
        # body proportions, scaled to roughly [0, 1] by the ranges make_identity draws from
        "shape": [
            (ident.height - 0.72) / 0.18,
            (ident.shoulder - 0.42) / 0.26,
            (ident.head - 0.10) / 0.05,
            (ident.leg_ratio - 0.42) / 0.14,
        ],
    }


#: Which images each attribute is learnt from: colours exist only in visible images and
#: material levels only in infrared ones; the rest survive the change of modality.
ATTRIBUTE_CLASSES = {
    "top_pattern": (len(_PATTERNS), "both"),
    "skirt": (2, "both"),
    "bottom_pattern": (len(_BOTTOM_PATTERNS), "both"),
    "accessory": (len(_ACCESSORIES), "both"),
    "hair": (len(_HAIR), "both"),
    "logo": (len(_LOGOS), "both"),
    "top_colour": (len(_PALETTE), "vis"),
    "bottom_colour": (len(_PALETTE), "vis"),
    "hair_colour": (len(_PALETTE), "vis"),
    "top_material": (len(_MATERIALS), "ir"),
    "bottom_material": (len(_MATERIALS), "ir"),
    "shape": (4, "both"),  # regression
}


def render_pretrain_set(
    num_ids: int, images_per_camera: int, height: int, width: int, *, progress: bool = True
) -> PretrainSet:
    """Render every identity in every camera of the pretraining set (in memory)."""
    from tqdm import tqdm

    cams = [(c, "vis") for c in SYSU_RGB_CAMERAS] + [(c, "ir") for c in SYSU_IR_CAMERAS]
    images, labels, is_ir, attrs = [], [], [], []
    for label in tqdm(range(num_ids), desc="rendering", disable=not progress):
        ident = make_identity(FIRST_PID + label, PRETRAIN_SEED)
        attr = identity_attributes(ident)
        for camid, modality in cams:
            for n in range(images_per_camera):
                img = render(
                    ident, modality, camid, n, height=height, width=width, seed=PRETRAIN_SEED
                )
                images.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))  # (3, H, W)
                labels.append(label)
                is_ir.append(modality == "ir")
                attrs.append(attr)
    attributes = {
        name: torch.tensor(
            [a[name] for a in attrs], dtype=torch.float32 if name == "shape" else torch.long
        )
        for name in ATTRIBUTE_CLASSES
    }
    return PretrainSet(torch.stack(images), torch.tensor(labels), torch.tensor(is_ir), attributes)


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 10) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> normalised float: random flip and padded random crop."""
    x = images.float().div_(255.0)
    B, _, H, W = x.shape
    flip = torch.rand(B, generator=generator) < 0.5
    x[flip] = x[flip].flip(-1)
    x = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    x = torch.stack([x[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])
    return (x - 0.5) / 0.5  # the tiny ViT's (timm default) normalisation


class PretrainNet(nn.Module):
    """A ViT encoder with a BN neck, an identity classifier and one head per attribute."""

    def __init__(self, num_ids: int, height: int, width: int, attributes: bool) -> None:
        super().__init__()
        self.encoder = ViTEncoder(
            "vit_tiny_patch16_224", img_size=(height, width), embed_dim=128, depth=4, num_heads=4
        )
        dim = self.encoder.embed_dim
        self.neck = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, num_ids, bias=False)
        names = ATTRIBUTE_CLASSES if attributes else {}
        self.attr_heads = nn.ModuleDict({n: nn.Linear(dim, k) for n, (k, _) in names.items()})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feat = self.neck(self.encoder(x))  # (B, C)
        return self.classifier(feat), {n: h(feat) for n, h in self.attr_heads.items()}


def pretrain_loss(
    logits: torch.Tensor, attr_out: dict, batch: dict, *, attr_weight: float = 0.5
) -> tuple[torch.Tensor, dict[str, float]]:
    """Identity cross-entropy plus the mean attribute loss, each attribute on its modality."""
    loss = F.cross_entropy(logits, batch["labels"], label_smoothing=0.1)
    terms = {"id": float(loss.detach())}
    attr_losses = []
    for name, out in attr_out.items():
        where = ATTRIBUTE_CLASSES[name][1]
        mask = (
            torch.ones_like(batch["is_ir"])
            if where == "both"
            else batch["is_ir"] == (where == "ir")
        )
        if not mask.any():
            continue
        target = batch["attributes"][name][mask]
        if name == "shape":
            attr_losses.append(F.smooth_l1_loss(out[mask], target, beta=0.1))
        else:
            attr_losses.append(F.cross_entropy(out[mask], target))
    if attr_losses:
        attr = torch.stack(attr_losses).mean()
        terms["attr"] = float(attr.detach())
        loss = loss + attr_weight * attr
    return loss, terms


def _eligible(data: PretrainSet, objective: str) -> torch.Tensor:
    """Indices of the images the objective trains on."""
    if objective == "vis-id":
        return torch.nonzero(~data.is_ir).squeeze(1)
    return torch.arange(len(data.labels))


def _batch(data: PretrainSet, idx: torch.Tensor, gen: torch.Generator) -> dict:
    return {
        "images": augment(data.images[idx], gen),
        "labels": data.labels[idx],
        "is_ir": data.is_ir[idx],
        "attributes": {k: v[idx] for k, v in data.attributes.items()},
    }


def run_pretraining(data: PretrainSet, args: argparse.Namespace) -> PretrainNet:
    """AdamW with a linear warm-up and cosine decay, over ``args.epochs`` epochs."""
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    num_ids = int(data.labels.max()) + 1
    net = PretrainNet(num_ids, args.height, args.width, args.objective == "both-id-attr")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05)
    pool = _eligible(data, args.objective)
    steps_per_epoch = len(pool) // args.batch_size
    total, warm = args.epochs * steps_per_epoch, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.5 * (1 + np.cos(np.pi * (s - warm) / max(1, total - warm)))
        ),
    )
    net.train()
    t0 = time.time()
    for epoch in range(args.epochs):
        order = pool[torch.randperm(len(pool), generator=gen)]
        sums: dict[str, float] = {}
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{args.epochs}",
            disable=not args.progress,
            leave=False,
        )
        for step in bar:
            batch = _batch(data, order[step * args.batch_size : (step + 1) * args.batch_size], gen)
            logits, attr_out = net(batch["images"])
            loss, terms = pretrain_loss(logits, attr_out, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        means = " ".join(f"{k} {v / steps_per_epoch:.3f}" for k, v in sums.items())
        print(f"epoch {epoch + 1}/{args.epochs} | {means} | {time.time() - t0:.0f}s", flush=True)
    return net.eval()


def save_backbone(net: PretrainNet, path: Path, metadata: dict[str, str]) -> str:
    """Write the encoder's timm state dict atomically as safetensors; returns its sha256."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in net.encoder.vit.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Options that do not change the weights, left out of the recorded command (so the bytes,
#: metadata included, do not depend on where the file is written).
_UNRECORDED = ("out", "overwrite", "progress", "debug")


def recorded_metadata(args: argparse.Namespace) -> dict[str, str]:
    """The safetensors metadata: one ``csetgraph`` key holding JSON (command, objective, args).

    One key, because safetensors writes a metadata map in no fixed order: with several keys
    the same weights could get different bytes, and so a different sha256.
    """
    opts = {k: v for k, v in vars(args).items() if k not in _UNRECORDED}
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in opts.items())
    info = {
        "command": f"python scripts/pretrain_backbone.py {flags}",
        "objective": args.objective,
        "args": opts,
    }
    return {"csetgraph": json.dumps(info, sort_keys=True)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--objective", choices=OBJECTIVES, default="both-id-attr")
    p.add_argument("--num-ids", type=int, default=400, help="pretraining identities")
    p.add_argument("--images-per-camera", type=int, default=4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 reproduces the bytes)")
    p.add_argument("--out", default="weights/synthetic_vit_tiny.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if min(args.num_ids, args.images_per_camera, args.epochs, args.batch_size) < 1:
            raise ConfigError(
                "--num-ids, --images-per-camera, --epochs and --batch-size must be >= 1"
            )
        if Path(args.out).exists() and not args.overwrite:
            raise DataFolderError(
                f"{args.out!r} already exists (the shipped weights, by default); pass "
                "--overwrite to replace it, or write elsewhere with --out"
            )
        torch.set_num_threads(args.threads)
        data = render_pretrain_set(
            args.num_ids, args.images_per_camera, args.height, args.width, progress=args.progress
        )
        if len(_eligible(data, args.objective)) < args.batch_size:
            raise ConfigError(
                f"--batch-size {args.batch_size} exceeds the {len(data.labels)} images; lower it"
            )
        net = run_pretraining(data, args)
        meta = recorded_metadata(args)
        digest = save_backbone(net, Path(args.out), meta)
        print(f"wrote {args.out} (sha256 {digest})")
        return 0

    return run_command(body, debug=args.debug, name="pretrain_backbone")


if __name__ == "__main__":
    sys.exit(main())
