"""Data sets: readers, the data-set table, synthetic data and fingerprints.

The data-set table
------------------
:data:`DATASETS` maps each ``data.dataset`` name to its reader module; :func:`get_dataset`
looks one up (a :class:`~csetgraph.errors.ConfigError` names the valid ones). Every module
offers the same names, so code that serves all data sets never branches on the name::

    from csetgraph.data import get_dataset

    ds = get_dataset(cfg.data.dataset)            # csetgraph.data.sysu_mm01, .regdb, .llcm
    ds.NAME                                        # "SYSU-MM01" | "RegDB" | "LLCM"
    ds.PROTOCOL                                    # "sysu" | "regdb" | "llcm" (rank_metrics)
    ds.DIRECTIONS                                  # ("i2v",) | ("v2i", "i2v") | ("i2v", "v2i")
    ds.SPLITS                                      # ("train", "val", "test")
    ds.MODES                                       # ("all", "indoor") | ("all",) | ("all",)
    root = ds.check_root(cfg.data.root)            # Path, or DatasetLayoutError
    ds.train_records(root, split=cfg.data.train_split, trial=cfg.data.trial)
    for t in ds.eval_trials(cfg.eval.trials, cfg.data.trial):
        query, gallery = ds.test_split(root, split="test", direction="i2v", trial=t, mode="all")
    ds.all_records(root, split="test", trial=cfg.data.trial)   # {"vis": [...], "ir": [...]}
    ds.ids_without_images(root, split="test", trial=cfg.data.trial)   # listed, no image
    ds.index_files(root)                           # id/idx files (for the fingerprint)
    ds.generate(root, **params)                    # a synthetic set in this layout

Call the functions with keywords after ``root``: their positional orders differ for older
callers. ``trial`` always means the protocol's trial: the gallery draw (0-9) for SYSU-MM01
and LLCM, the train/test split (1-10, ``data.trial``) for RegDB, whose readers use it
everywhere and whose ``eval_trials`` returns ``[data.trial]``. Every ``test_split`` takes
``mode``, one of the module's ``MODES`` (only SYSU-MM01 has two search modes); SYSU-MM01's
also takes ``shots``, ``gallery`` and ``perm`` (see
:func:`csetgraph.data.sysu_mm01.test_split`). Directions are the shared
vocabulary :data:`csetgraph.data.records.DIRECTIONS` (``"<query>2<gallery>"``, lower case).

Adding a data set is one new module with these names plus one line in :data:`DATASETS`.

Fingerprints
------------
:func:`dataset_fingerprint` summarises which data a run read (sorted relative paths, file
sizes, ids per split, images per modality) in a short digest; see
:mod:`csetgraph.data.fingerprint`.
"""

from __future__ import annotations

from types import ModuleType

from csetgraph.data import llcm, regdb, sysu_mm01
from csetgraph.data.fingerprint import DatasetFingerprint, compare_fingerprints, dataset_fingerprint
from csetgraph.errors import ConfigError

#: ``data.dataset`` name -> reader module (the one table of data sets).
DATASETS: dict[str, ModuleType] = {"sysu_mm01": sysu_mm01, "regdb": regdb, "llcm": llcm}


def get_dataset(name: str) -> ModuleType:
    """The reader module of data set ``name``, or a :class:`ConfigError` naming the choices."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"data.dataset must be one of {', '.join(DATASETS)}, got {name!r}"
        ) from None


__all__ = [
    "DATASETS",
    "DatasetFingerprint",
    "compare_fingerprints",
    "dataset_fingerprint",
    "get_dataset",
]
