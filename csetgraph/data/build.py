"""From a data config to records, datasets and loaders (the data side's one adapter)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from csetgraph.config import DataConfig
from csetgraph.data import get_dataset
from csetgraph.data.records import (
    DatasetLayoutError,
    Record,
    check_images,
    relabel,
    warn_small_images,
)

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """Relabelled training records of both modalities."""

    vis: list[Record]
    ir: list[Record]
    num_classes: int
    pid_map: dict[int, int]


def synthetic_params(cfg: DataConfig) -> dict:
    """The keyword arguments of the table's ``generate`` for ``data.synthetic``."""
    syn = cfg.synthetic
    return dict(
        num_train_ids=syn.num_train_ids,
        num_val_ids=syn.num_val_ids,
        num_test_ids=syn.num_test_ids,
        images_per_camera=syn.images_per_camera,
        height=syn.height,
        width=syn.width,
        seed=syn.seed,
    )


def ensure_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """Return ``data.root``, generating the synthetic data set there first if it is missing.

    Generation happens only when ``data.synthetic.enabled`` is true and the folder does not
    hold a complete data set yet; a real data set is never touched.
    """
    root = Path(cfg.root)
    ds = get_dataset(cfg.dataset)
    marker = {"sysu_mm01": "exp/test_id.txt", "regdb": "idx", "llcm": "idx/test_id.txt"}
    if cfg.synthetic.enabled and not (root / marker[cfg.dataset]).exists():
        ds.generate(root, **synthetic_params(cfg), progress=progress)
    ds.check_root(root)
    return root


def train_records(cfg: DataConfig) -> list[Record]:
    """The raw (not relabelled) training records of the configured data set."""
    ds = get_dataset(cfg.dataset)
    return ds.train_records(cfg.root, split=cfg.train_split, trial=cfg.trial)


def build_train_data(cfg: DataConfig, *, min_side: int = 16) -> TrainData:
    """Read, check, and relabel the training records.

    Unreadable images are skipped (and counted) with ``data.skip_corrupt``; images smaller
    than ``min_side`` pixels (one patch: the trainer passes the model's patch size) are
    counted in a warning.
    """
    records = train_records(cfg)
    if cfg.skip_corrupt:
        records, bad = check_images(records)
        if bad:
            log.warning("skipped %d unreadable images, e.g. %s", len(bad), bad[0])
    warn_small_images(records, min_side)
    records, pid_map = relabel(records)
    vis = [r for r in records if r.modality == "vis"]
    ir = [r for r in records if r.modality == "ir"]
    if not vis or not ir:
        raise DatasetLayoutError(
            f"the training split of {cfg.root!r} needs images of both modalities "
            f"(found {len(vis)} visible, {len(ir)} infrared)"
        )
    return TrainData(vis, ir, len(pid_map), pid_map)
