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
    by_modality,
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
    """Return ``data.root`` once it holds a readable data set, generating a synthetic one first
    when ``data.synthetic.enabled`` is true.

    Generation writes only into a missing or empty folder, or one generated before (marked
    by :data:`csetgraph.data.synthetic.MARKER`): the same parameters reuse it, others
    regenerate it. Any other folder (a real data set, a typo in ``data.dataset``, a folder
    written by an older csetgraph) raises :class:`~csetgraph.errors.DataFolderError` before
    anything is written. Then every split is read once, so a missing id/idx file or a listed
    image that does not exist fails here, at start-up, not after training.

    Raises:
        ConfigError: an unknown ``data.dataset``.
        DataFolderError: generation was asked into a folder that is not ours.
        DatasetLayoutError: the folder is missing or not in the data set's layout
            (:class:`~csetgraph.errors.IdFileError` for id/idx files).
    """
    root = Path(cfg.root)
    ds = get_dataset(cfg.dataset)
    if cfg.synthetic.enabled:
        ds.generate(root, **synthetic_params(cfg), progress=progress)
    ds.check_root(root)
    for split in ds.SPLITS:
        ds.all_records(root, split=split, trial=cfg.trial)
        warning = ids_without_images_warning(cfg, split)
        if warning:
            log.warning("warning: %s", warning)
    return root


def ids_without_images_warning(cfg: DataConfig, split: str) -> str | None:
    """A warning naming the identities ``split`` lists but holds no image of, or None.

    Such an identity silently drops out of training or of the protocol (the numbers are
    then over fewer identities than the id file says); usually a copy is incomplete.
    """
    ds = get_dataset(cfg.dataset)
    missing = ds.ids_without_images(cfg.root, split=split, trial=cfg.trial)
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
    return (
        f"{len(missing)} {split} identities of {cfg.root} have no images ({shown}); they take "
        "no part in training or evaluation: check that the data set copy is complete"
    )


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
    parts = by_modality(records)
    vis, ir = parts["vis"], parts["ir"]
    if not vis or not ir:
        raise DatasetLayoutError(
            f"the training split of {cfg.root!r} needs images of both modalities "
            f"(found {len(vis)} visible, {len(ir)} infrared)"
        )
    return TrainData(vis, ir, len(pid_map), pid_map)
