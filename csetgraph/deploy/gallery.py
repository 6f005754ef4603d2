"""Build a gallery index from a run: which images, their embeddings, the camera rule and the
open-set threshold. ``csetgraph index`` is this module behind a command line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csetgraph.data import get_dataset
from csetgraph.data.records import Record, other_modality
from csetgraph.deploy.embedder import RunEmbedder, check_modality
from csetgraph.errors import DatasetLayoutError
from csetgraph.evaluation.metrics import ignored_gallery
from csetgraph.retrieval import Calibration, build_gallery_index, calibrate_threshold

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
UNKNOWN = -1  # pid or camid of an image from a plain folder


def split_records(embedder: RunEmbedder, split: str, modality: str) -> dict[str, list[Record]]:
    """Every image of ``split`` of the run's data set, per modality (``all_records``)."""
    check_modality(modality)
    data = embedder.cfg.data
    ds = get_dataset(data.dataset)
    root = ds.check_root(data.root)
    return ds.all_records(root, split=split, trial=data.trial)


def folder_records(folder: str | Path, modality: str) -> list[Record]:
    """The images of a plain folder (recursively, sorted), with unknown pid and camera."""
    check_modality(modality)
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetLayoutError(f"--images {str(folder)!r} is not a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetLayoutError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(folder)!r}; pass a folder "
            "that holds the gallery's image files"
        )
    return [Record(str(p), UNKNOWN, UNKNOWN, modality) for p in paths]


def camera_rule(protocol: str, query_cameras: Sequence[int], gallery_cameras: Sequence[int]):
    """Gallery cameras each query camera must never see, from the protocol's ignore rule.

    Only rules that hold whatever the identities are become camera exclusions (SYSU-MM01:
    ``{3: [2]}``); identity-dependent rules (LLCM's same person and camera) need the query's
    identity, which a deployed search does not know.
    """
    g_cams = np.asarray(sorted(set(gallery_cameras)))
    rule = {}
    for cam in sorted(set(query_cameras)):
        # Identities -1 (query) and -2 (gallery) never match, so only camera rules remain.
        mask = ignored_gallery(protocol, -1, cam, np.full(len(g_cams), -2), g_cams)
        if mask.any():
            rule[int(cam)] = [int(c) for c in g_cams[mask]]
    return rule


def metadata_of(records: Sequence[Record]) -> list[dict]:
    return [
        {"path": r.path, "pid": int(r.pid), "camid": int(r.camid), "modality": r.modality}
        for r in records
    ]


@dataclass
class GalleryBuild:
    """The index and what went into it."""

    index: Any  # GalleryIndex, or MilvusGalleryIndex with a store
    calibration: Calibration | None = None


def calibrate(
    embedder: RunEmbedder, split: str, modality: str, target_fmr: float, progress: bool = True
) -> Calibration:
    """The open-set threshold on ``split``'s identities: other-modality queries vs ``modality``."""
    records = split_records(embedder, split, modality)
    gallery = embedder.embed_records(records[modality], modality, progress=progress)
    queries = embedder.embed_records(
        records[other_modality(modality)], other_modality(modality), progress=progress
    )
    return calibrate_threshold(
        queries,
        np.array([r.pid for r in records[other_modality(modality)]]),
        gallery,
        np.array([r.pid for r in records[modality]]),
        target_fmr=target_fmr,
    )


def build_gallery(
    embedder: RunEmbedder,
    records: Sequence[Record],
    modality: str,
    *,
    kind: str = "flat",
    exclude_cameras: dict[int, list[int]] | None = None,
    calibration: Calibration | None = None,
    progress: bool = True,
    store: dict[str, str] | None = None,
    overwrite: bool = False,
    **params: int,
) -> GalleryBuild:
    """Embed ``records`` and index them, with the run's stamp and preprocessing.

    ``store``: a Milvus store (:func:`csetgraph.retrieval.milvus.parse_store`) instead of
    faiss; ``overwrite`` replaces an existing collection of the same name.
    """
    if not records:
        raise DatasetLayoutError(f"no {modality} images to index")
    feats = embedder.embed_records(records, modality, progress=progress)
    index = build_gallery_index(
        feats,
        metadata_of(records),
        kind=kind,
        store=store,
        overwrite=overwrite,
        model=embedder.stamp,
        preprocess={**embedder.preprocess, "modality": modality},
        threshold=None if calibration is None else calibration.threshold,
        **params,
    )
    index.manifest.exclude_cameras = {str(k): v for k, v in (exclude_cameras or {}).items()}
    if calibration is not None:
        index.manifest.calibration = calibration.to_dict()
    return GalleryBuild(index, calibration)
