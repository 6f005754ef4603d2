"""The images a figure shows: one retrieval trial's query and gallery, or every test image.

Figures read the data set named by the run's config (``cfg.data.dataset`` and
``cfg.data.root``), through the same readers and gallery draws as the evaluation, so a ranked
list shows exactly a gallery the metrics were computed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from csetgraph.config import Config
from csetgraph.data.records import Record

__all__ = ["RetrievalSet", "retrieval_set", "split_images"]

#: (query, gallery) modalities of the two retrieval directions.
DIRECTIONS = {"I2V": ("ir", "vis"), "V2I": ("vis", "ir")}


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
    direction: str = "I2V",
) -> RetrievalSet:
    """Query and gallery of one evaluation trial of the run's data set.

    Args:
        cfg: the run's config (``data.dataset``, ``data.root``, ``data.trial`` for RegDB).
        split: ``"test"`` or ``"val"``.
        mode: SYSU-MM01 search mode, ``"all"`` or ``"indoor"``.
        trial: SYSU-MM01 / LLCM gallery draw (0-9); RegDB uses ``cfg.data.trial``.
        direction: ``"I2V"`` (infrared queries, the SYSU-MM01 protocol's only direction) or
            ``"V2I"`` (RegDB and LLCM).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {tuple(DIRECTIONS)}, got {direction!r}")
    q_mod, g_mod = DIRECTIONS[direction]
    dataset, root = cfg.data.dataset, cfg.data.root
    if dataset == "sysu_mm01":
        from csetgraph.data import sysu_mm01

        if direction != "I2V":
            raise ValueError("the SYSU-MM01 protocol has infrared queries only: use I2V")
        query, gallery = sysu_mm01.test_split(root, mode, trial, 1, split)
        desc = f"SYSU-MM01 {mode}-search, trial {trial}"
        return RetrievalSet(query, gallery, "sysu", q_mod, g_mod, desc)
    if dataset == "regdb":
        from csetgraph.data import regdb

        vis, ir = regdb.test_records(root, cfg.data.trial, split)
        recs = {"vis": vis, "ir": ir}
        desc = f"RegDB trial {cfg.data.trial}, {direction}"
        return RetrievalSet(recs[q_mod], recs[g_mod], "regdb", q_mod, g_mod, desc)
    if dataset == "llcm":
        from csetgraph.data import llcm

        query = llcm.test_records(root, q_mod, split)
        gallery = llcm.sample_gallery(llcm.test_records(root, g_mod, split), trial)
        desc = f"LLCM {direction}, trial {trial}"
        return RetrievalSet(query, gallery, "llcm", q_mod, g_mod, desc)
    raise ValueError(f"data.dataset must be sysu_mm01, regdb or llcm, got {dataset!r}")


def split_images(cfg: Config, split: str = "test") -> dict[str, list[Record]]:
    """Every image of the split's identities, per modality: ``{"vis": [...], "ir": [...]}``.

    SYSU-MM01: all images of all six cameras (not one gallery draw); RegDB: the trial's
    test lists; LLCM: every test image of both modalities.
    """
    dataset, root = cfg.data.dataset, cfg.data.root
    if dataset == "sysu_mm01":
        from csetgraph.data import sysu_mm01

        out: dict[str, list[Record]] = {"vis": [], "ir": []}
        for pid in sorted(sysu_mm01.read_ids(root, split)):
            for camid in range(1, 7):
                modality = "ir" if camid in sysu_mm01.IR_CAMERAS else "vis"
                folder = Path(root) / f"cam{camid}" / f"{pid:04d}"
                if folder.is_dir():
                    files = sorted(p for p in folder.iterdir() if p.is_file())
                    out[modality].extend(Record(str(p), pid, camid, modality) for p in files)
        return out
    if dataset == "regdb":
        from csetgraph.data import regdb

        vis, ir = regdb.test_records(root, cfg.data.trial, split)
        return {"vis": vis, "ir": ir}
    if dataset == "llcm":
        from csetgraph.data import llcm

        return {m: llcm.test_records(root, m, split) for m in ("vis", "ir")}
    raise ValueError(f"data.dataset must be sysu_mm01, regdb or llcm, got {dataset!r}")
