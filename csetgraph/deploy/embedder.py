"""A trained run as an image embedder: its model, evaluation transform and identity.

``csetgraph index``, ``search``, ``serve`` and ``export`` all embed through
:class:`RunEmbedder`, so a gallery and its queries are prepared exactly as the run's
evaluation prepares them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from csetgraph.config import Config
from csetgraph.data.records import MODALITIES, Record, image_to_rgb
from csetgraph.data.torch_datasets import ImageDataset
from csetgraph.engine.runs import eval_transform, input_stats, load_run, run_folder
from csetgraph.errors import ConfigError


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict's names, shapes and bytes (same weights, same digest)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def split_run_argument(items: Sequence[str]) -> tuple[str, list[str]]:
    """``RUN`` and the ``key=value`` overrides from positionals given in any order.

    The run is the one item that is an existing path or has no ``=``; all others are
    overrides. Lets ``csetgraph export data.root=/d runs/x`` work as ``... runs/x data.root=/d``.
    """
    runs = [i for i in items if "=" not in i or Path(i).exists()]
    if len(runs) != 1:
        found = ", ".join(map(repr, runs)) or "none"
        raise ConfigError(
            f"expected one run folder or checkpoint and key=value overrides, found runs: "
            f"{found}; e.g. csetgraph export runs/my-run --output out/ data.root=/data"
        )
    return runs[0], [i for i in items if i is not runs[0]]


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    return modality


@dataclass
class RunEmbedder:
    """A loaded run ready to embed images.

    Attributes:
        model: the CSET model, eval mode.
        cfg: the run's config.
        stamp: ``{"run": folder, "weights": fingerprint}``: which model this is.
        preprocess: ``{"height", "width", "mean", "std"}`` of the evaluation transform.
    """

    model: torch.nn.Module
    cfg: Config
    stamp: dict[str, str]
    preprocess: dict[str, Any]
    device: torch.device | str = "cpu"
    batch_size: int = 64

    @classmethod
    def from_run(
        cls, path: str | Path, *, overrides: Sequence[str] = (), device: str = "cpu"
    ) -> RunEmbedder:
        """Load a run folder or checkpoint file (see :func:`csetgraph.engine.runs.load_run`)."""
        model, cfg = load_run(path, overrides=overrides, device=device)
        mean, std = input_stats(model, cfg)
        preprocess = {
            "height": int(cfg.data.height),
            "width": int(cfg.data.width),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        }
        stamp = {"run": str(run_folder(path).resolve()), "weights": weights_fingerprint(model)}
        return cls(model, cfg, stamp, preprocess, device, int(cfg.eval.batch_size))

    @property
    def transform(self):
        return eval_transform(self.model, self.cfg)

    @torch.no_grad()
    def embed_tensor(self, images: torch.Tensor, modality: str) -> np.ndarray:
        """``(B, 3, H, W)`` prepared images -> ``(B, D)`` float32 L2-normalised embeddings."""
        check_modality(modality)
        feats = self.model.embed(images.to(self.device), modality)
        return feats.float().cpu().numpy()

    def embed_images(self, images: Sequence[Image.Image], modality: str) -> np.ndarray:
        """Embed PIL images (any size: the transform resizes them)."""
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        batch = torch.stack([self.transform(image_to_rgb(img)) for img in images])
        return self.embed_tensor(batch, modality)

    def embed_records(
        self, records: Sequence[Record], modality: str, *, progress: bool = True
    ) -> np.ndarray:
        """Embed image files in batches, with a progress bar: ``(len(records), D)``."""
        loader = DataLoader(
            ImageDataset(list(records), self.transform),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=int(self.cfg.data.num_workers),  # the run's own loader setting
        )
        out = [
            self.embed_tensor(images, modality)
            for images, *_ in tqdm(loader, desc=f"embedding {modality}", disable=not progress)
        ]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
