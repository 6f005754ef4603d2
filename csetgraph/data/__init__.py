"""Data sets: readers, the data-set table, synthetic data and fingerprints.

The data-set table
------------------
:data:`DATASETS` maps each ``data.dataset`` name to its reader module; :func:`get_dataset`
looks one up (a :class:`~csetgraph.errors.ConfigError` names the valid ones). Every module
fulfils :class:`DatasetModule`, the written contract (a test checks each registered module
against it), so code that serves all data sets never branches on the name::

    from csetgraph.data import get_dataset

    ds = get_dataset(cfg.data.dataset)            # csetgraph.data.sysu_mm01, .regdb, .llcm
    root = ds.check_root(cfg.data.root)            # Path, or DatasetLayoutError
    ds.train_records(root, split=cfg.data.train_split, trial=cfg.data.trial)
    for t in ds.eval_trials(num_trials=cfg.eval.trials, data_trial=cfg.data.trial):
        query, gallery = ds.test_split(root, split="test", direction="i2v", trial=t, mode="all")

Call through the table with keywords after ``root``, as :class:`DatasetModule` writes them:
the modules' own positional orders differ. Adding a data set is one new module that fulfils
:class:`DatasetModule` plus one line in :data:`DATASETS`.

Fingerprints
------------
:func:`dataset_fingerprint` summarises which data a run read (sorted relative paths, file
sizes, ids per split, images per modality) in a short digest; see
:mod:`csetgraph.data.fingerprint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from csetgraph.data import llcm, regdb, sysu_mm01
from csetgraph.data.fingerprint import DatasetFingerprint, compare_fingerprints, dataset_fingerprint
from csetgraph.data.records import Record
from csetgraph.errors import ConfigError


class DatasetModule(Protocol):
    """What a data-set module offers: the contract behind :data:`DATASETS`.

    A module fulfils it with module-level constants and functions of these names (PEP 544:
    a module can implement a protocol). The functions may take more arguments (SYSU-MM01's
    ``test_split`` also takes ``shots``, ``gallery`` and ``perm``) and may accept the
    keywords positionally too, but every argument named here must be accepted by that name,
    and every extra one must have a default.

    ``trial`` always means the protocol's trial: the gallery draw (0-9) for SYSU-MM01 and
    LLCM, the train/test split (1-10, ``data.trial``) for RegDB, whose readers use it
    everywhere and whose ``eval_trials`` returns ``[data_trial]``. ``split`` is one of
    ``SPLITS`` (``train_records`` also takes ``"train+val"``), ``direction`` one of
    ``DIRECTIONS`` (the shared vocabulary :data:`csetgraph.data.records.DIRECTIONS`,
    ``"<query>2<gallery>"``), ``mode`` one of ``MODES`` (only SYSU-MM01 has two search modes).
    """

    #: The name papers print: ``"SYSU-MM01"``, ``"RegDB"``, ``"LLCM"``.
    NAME: str
    #: The ranking rule of :func:`csetgraph.evaluation.rank_metrics`: ``"sysu"`` and so on.
    PROTOCOL: str
    #: The directions the protocol reports, e.g. ``("i2v",)`` or ``("v2i", "i2v")``.
    DIRECTIONS: tuple[str, ...]
    #: The search modes, e.g. ``("all", "indoor")`` or ``("all",)``.
    MODES: tuple[str, ...]
    #: ``("train", "val", "test")``.
    SPLITS: tuple[str, ...]

    def check_root(self, root: str | Path) -> Path:
        """``root`` as a Path, or a DatasetLayoutError saying what the layout should be."""
        ...

    def train_records(self, root: str | Path, *, split: str, trial: int) -> list[Record]:
        """The training images of ``split`` (``"train+val"``, ``"train"``), labels 0..C-1."""
        ...

    def test_split(
        self, root: str | Path, *, split: str, direction: str, trial: int, mode: str = "all"
    ) -> tuple[list[Record], list[Record]]:
        """The query and gallery of one evaluation trial."""
        ...

    def eval_trials(self, *, num_trials: int, data_trial: int = 1) -> list[int]:
        """The trials one evaluation runs (gallery draws, or RegDB's own split)."""
        ...

    def all_records(self, root: str | Path, *, split: str, trial: int) -> dict[str, list[Record]]:
        """Every image of the split's identities, per modality: ``{"vis": [...], "ir": [...]}``."""
        ...

    def ids_without_images(self, root: str | Path, *, split: str, trial: int) -> list[int]:
        """Identities the split's id files list but no image of which exists (warned about)."""
        ...

    def index_files(self, root: str | Path) -> list[Path]:
        """The id/idx files that define the data set besides its images (for the fingerprint)."""
        ...

    def generate(self, root: str | Path, **params: Any) -> Path:
        """Write a synthetic data set in this layout into ``root``."""
        ...


#: ``data.dataset`` name -> reader module (the one table of data sets).
DATASETS: dict[str, DatasetModule] = {"sysu_mm01": sysu_mm01, "regdb": regdb, "llcm": llcm}


def get_dataset(name: str) -> DatasetModule:
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
    "DatasetModule",
    "compare_fingerprints",
    "dataset_fingerprint",
    "get_dataset",
]
