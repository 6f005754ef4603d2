"""The images a figure shows: one retrieval trial's query and gallery, or every test image.

Figures read the data set named by the run's config (``cfg.data.dataset`` and
``cfg.data.root``) through the data-set table (:data:`csetgraph.data.DATASETS`), with the
same readers and gallery draws as the evaluation, so a ranked list shows exactly a gallery
the metrics were computed on.
"""

from __future__ import annotations

from dataclasses import dataclass

from csetgraph.config import Config
from csetgraph.data import get_dataset
from csetgraph.data.records import DIRECTIONS, Record
from csetgraph.errors import ConfigError

__all__ = ["RetrievalSet", "retrieval_set", "split_images"]


@dataclass(frozen=True)
class RetrievalSet:
    """One trial's query and gallery and the protocol that ranks them."""

    query: list[Record]
    gallery: list[Record]
    protocol: str  # "sysu" | "regdb" | "llcm" (see csetgraph.evaluation.metrics)
    query_modality: str
    gallery_modality: str
    description: str


def retrieval_set(
    cfg: Config,
    *,
    split: str = "test",
    mode: str = "all",
    trial: int = 0,
    direction: str = "i2v",
) -> RetrievalSet:
    """Query and gallery of one evaluation trial of the run's data set.

    Args:
        cfg: the run's config (``data.dataset``, ``data.root``, ``data.trial`` for RegDB).
        split: ``"test"`` or ``"val"``.
        mode: SYSU-MM01 search mode, ``"all"`` or ``"indoor"``.
        trial: which of the evaluation's trials (0-based): the gallery draw of SYSU-MM01
            and LLCM; RegDB evaluates one trial, the run's own ``data.trial``.
        direction: ``"i2v"`` (infrared queries; SYSU-MM01's only direction) or ``"v2i"``.

    Raises:
        ConfigError: a direction the data set's protocol does not have.
    """
    ds = get_dataset(cfg.data.dataset)
    if direction not in ds.DIRECTIONS:
        raise ConfigError(
            f"the {ds.NAME} protocol has the directions {', '.join(ds.DIRECTIONS)}; "
            f"got --direction {direction}"
        )
    trials = ds.eval_trials(num_trials=trial + 1, data_trial=cfg.data.trial)
    number = trials[min(trial, len(trials) - 1)]
    # SYSU-MM01's rows are its search modes (the table's test_split takes mode= there only).
    options = {"mode": mode} if ds.PROTOCOL == "sysu" else {}
    query, gallery = ds.test_split(
        cfg.data.root, split=split, direction=direction, trial=number, **options
    )
    what = f"{mode}-search" if options else direction
    desc = f"{ds.NAME} {what}, trial {number}"
    q_mod, g_mod = DIRECTIONS[direction]
    return RetrievalSet(query, gallery, ds.PROTOCOL, q_mod, g_mod, desc)


def split_images(cfg: Config, split: str = "test") -> dict[str, list[Record]]:
    """Every image of the split's identities, per modality: ``{"vis": [...], "ir": [...]}``.

    The table's ``all_records``: SYSU-MM01's six cameras (not one gallery draw), RegDB's
    lists of the run's trial, LLCM's test images of both modalities.
    """
    ds = get_dataset(cfg.data.dataset)
    return ds.all_records(cfg.data.root, split=split, trial=cfg.data.trial)
