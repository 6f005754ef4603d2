"""From a data config to records, datasets and loaders (the data side's one adapter)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from csetgraph.config import DataConfig
from csetgraph.data.records import DatasetLayoutError, Record, check_images, relabel

log = logging.getLogger(__name__)

DATASETS = ("sysu_mm01", "regdb", "llcm")


@dataclass
class TrainData:
    """Relabelled training records of both modalities."""

    vis: list[Record]
    ir: list[Record]
    num_classes: int
    pid_map: dict[int, int]


def ensure_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """Return ``data.root``, generating the synthetic data set there first if it is missing.

    Generation happens only when ``data.synthetic.enabled`` is true and the folder does not
    hold a complete data set yet; a real data set is never touched.
    """
    root = Path(cfg.root)
    if cfg.dataset not in DATASETS:
        raise ValueError(f"data.dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    syn = cfg.synthetic
    marker = {"sysu_mm01": "exp/test_id.txt", "regdb": "idx", "llcm": "idx/test_id.txt"}
    if syn.enabled and not (root / marker[cfg.dataset]).exists():
        from csetgraph.data import synthetic

        kwargs = dict(
            num_train_ids=syn.num_train_ids,
            num_val_ids=syn.num_val_ids,
            num_test_ids=syn.num_test_ids,
            images_per_camera=syn.images_per_camera,
            height=syn.height,
            width=syn.width,
            seed=syn.seed,
            progress=progress,
        )
        if cfg.dataset == "sysu_mm01":
            synthetic.generate_sysu_mm01(root, **kwargs)
        else:
            writer = getattr(synthetic, f"generate_{cfg.dataset}", None)
            if writer is None:
                raise DatasetLayoutError(f"no synthetic generator for {cfg.dataset}")
            writer(root, **kwargs)
    if not root.exists():
        raise DatasetLayoutError(
            f"data set folder {str(root)!r} does not exist; set data.root to your copy of "
            f"{cfg.dataset}, or data.synthetic.enabled=true to generate a synthetic one"
        )
    return root


def train_records(cfg: DataConfig) -> list[Record]:
    """The raw (not relabelled) training records of the configured data set."""
    if cfg.dataset == "sysu_mm01":
        from csetgraph.data.sysu_mm01 import train_records as read

        return read(cfg.root, cfg.train_split)
    if cfg.dataset == "regdb":
        from csetgraph.data.regdb import train_records as read

        return read(cfg.root, cfg.trial, cfg.train_split)
    from csetgraph.data.llcm import train_records as read

    return read(cfg.root, cfg.train_split)


def build_train_data(cfg: DataConfig) -> TrainData:
    """Read, optionally check, and relabel the training records."""
    records = train_records(cfg)
    if cfg.skip_corrupt:
        records, bad = check_images(records)
        if bad:
            log.warning("skipped %d unreadable images, e.g. %s", len(bad), bad[0])
    records, pid_map = relabel(records)
    vis = [r for r in records if r.modality == "vis"]
    ir = [r for r in records if r.modality == "ir"]
    if not vis or not ir:
        raise DatasetLayoutError(
            f"the training split of {cfg.root!r} needs images of both modalities "
            f"(found {len(vis)} visible, {len(ir)} infrared)"
        )
    return TrainData(vis, ir, len(pid_map), pid_map)
