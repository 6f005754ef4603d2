"""LLCM reader and its test protocol's query/gallery split (as DEEN's reference code).

Layout, as distributed by the authors (and as :func:`csetgraph.data.synthetic.generate_llcm`
writes it)::

    root/idx/train_vis.txt, root/idx/train_nir.txt   lines "relative/path label"
    root/idx/test_id.txt                             one comma-separated line of pids
    root/test_vis/cam{1..9}/{pid:04d}/*.jpg          visible test images
    root/test_nir/cam{1,2,4..9}/{pid:04d}/*.jpg      near-infrared test images (no cam3)

The nine cameras record visible light by day and near-infrared light by night, so camera
``c`` of one modality and camera ``c`` of the other are the same place: the protocol drops
the gallery images with the query's identity *and* camera (``protocol="llcm"`` of
:func:`~csetgraph.evaluation.metrics.rank_metrics`).

Records: modality ``"vis"`` for visible and ``"ir"`` for near-infrared images; ``camid``
from the ``cam{c}`` folder of the path (0 when a training path has none).

Model selection: LLCM has no validation split, so a seeded
:data:`~csetgraph.data.regdb.VAL_FRACTION` of the training identities is held out
(:func:`val_ids`); ``train_records(root, "train")`` leaves them out and
``test_split(..., split="val")`` builds the protocol on them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from csetgraph.data import synthetic
from csetgraph.data.records import DIRECTIONS as DIRECTION_MODALITIES
from csetgraph.data.records import (
    Record,
    by_modality,
    check_layout,
    check_listed_files,
    idx_files,
    other_modality,
    read_id_file,
)
from csetgraph.data.regdb import TRAIN_SPLITS, VAL_FRACTION, hold_out_ids, read_list
from csetgraph.errors import DatasetLayoutError, IdFileError

#: The data-set table's entries (see :mod:`csetgraph.data`).
NAME = "LLCM"
PROTOCOL = "llcm"
DIRECTIONS = ("i2v", "v2i")
MODES = ("all",)
REQUIRED = ("idx", "test_vis", "test_nir")
EXPECTED = (
    "root/idx/{train_vis,train_nir,test_id}.txt and root/test_{vis,nir}/cam<c>/<pid:04d>/*.jpg"
)
#: Splits of :func:`all_records`.
SPLITS = ("train", "val", "test")

#: Test cameras of each modality, in the order the reference code walks them.
TEST_CAMERAS = {"vis": (1, 2, 3, 4, 5, 6, 7, 8, 9), "ir": (1, 2, 4, 5, 6, 7, 8, 9)}
_FOLDER = {"vis": "vis", "ir": "nir"}
#: Seed of the validation hold-out (LLCM has one training split).
VAL_SEED = 0
_CAM = re.compile(r"(?:^|/)cam(\d+)(?:/|$)")


def check_root(root: str | Path) -> Path:
    """``root`` as a Path if it has the LLCM layout (else :class:`DatasetLayoutError`)."""
    return check_layout(root, NAME, REQUIRED, EXPECTED)


def _camid(rel: str) -> int:
    match = _CAM.search(rel.replace("\\", "/"))
    return int(match.group(1)) if match else 0


def read_test_ids(root: str | Path) -> list[int]:
    """The test identities from ``idx/test_id.txt`` (one comma-separated line)."""
    path = check_root(root) / "idx" / "test_id.txt"
    if not path.is_file():
        raise IdFileError(
            f"missing idx file {str(path)!r}; LLCM lists its test identities there as one "
            "comma-separated line"
        )
    return read_id_file(path)


def _all_train_records(root: Path) -> list[Record]:
    records = []
    for name, modality in (("train_vis.txt", "vis"), ("train_nir.txt", "ir")):
        listing = root / "idx" / name
        listed = [
            Record(str(root / rel), label, _camid(rel), modality)
            for rel, label in read_list(listing)
        ]
        check_listed_files(listed, listing)
        records.extend(listed)
    return records


def val_ids(root: str | Path) -> list[int]:
    """The training identities held out for model selection (seeded, fixed)."""
    records = _all_train_records(check_root(root))
    return hold_out_ids([r.pid for r in records], VAL_FRACTION, seed=VAL_SEED)


def train_records(root: str | Path, split: str = "train+val", trial: int = 1) -> list[Record]:
    """The training images of both modalities (visible first), pids as labelled.

    Args:
        root: the LLCM folder.
        split: ``"train+val"`` (all 713 training ids, for comparable numbers), ``"train"``
            (without the held-out validation ids of :func:`val_ids`) or ``"val"``.
        trial: unused (LLCM has one training split); accepted so that every reader of the
            data-set table is called the same way.
    """
    if split not in TRAIN_SPLITS:
        raise ValueError(f"training split must be one of {TRAIN_SPLITS}, got {split!r}")
    records = _all_train_records(check_root(root))
    if split != "train+val":
        held = set(hold_out_ids([r.pid for r in records], VAL_FRACTION, seed=VAL_SEED))
        records = [r for r in records if (r.pid in held) == (split == "val")]
    return records


def test_records(root: str | Path, modality: str, split: str = "test") -> list[Record]:
    """Every image of one modality, in the reference code's query order.

    ``split="test"``: test ids sorted, then the modality's test cameras in order
    (:data:`TEST_CAMERAS`; missing folders skipped), files sorted by name. ``split="val"``:
    the held-out training identities, ordered by (pid, camera, path).
    """
    if modality not in TEST_CAMERAS:
        raise ValueError(f"modality must be 'vis' or 'ir', got {modality!r}")
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    root = check_root(root)
    if split == "val":
        records = [r for r in train_records(root, "val") if r.modality == modality]
        return sorted(records, key=lambda r: (r.pid, r.camid, r.path))
    records = []
    for pid in sorted(read_test_ids(root)):
        for camid in TEST_CAMERAS[modality]:
            folder = root / f"test_{_FOLDER[modality]}" / f"cam{camid}" / f"{pid:04d}"
            if folder.is_dir():
                files = sorted(p.name for p in folder.iterdir() if p.is_symlink() or p.is_file())
                records.extend(Record(str(folder / f), pid, camid, modality) for f in files)
    return records


def sample_gallery(records: list[Record], trial: int) -> list[Record]:
    """One image per identity and camera, drawn as DEEN's ``process_gallery_llcm``.

    ``random.seed(trial)``, then for each (pid, camera) group of ``records`` in order,
    ``random.choice`` among its records (sorted files). ``records`` must be in
    :func:`test_records` order, where each group is contiguous. A private
    ``random.Random(trial)`` gives the same draws as the global generator seeded the same
    way, without touching global state.
    """
    rng = random.Random(trial)
    gallery, start = [], 0
    while start < len(records):
        key = (records[start].pid, records[start].camid)
        stop = start
        while stop < len(records) and (records[stop].pid, records[stop].camid) == key:
            stop += 1
        gallery.append(rng.choice(records[start:stop]))
        start = stop
    return gallery


def test_split(
    root: str | Path,
    query_modality: str = "ir",
    trial: int = 0,
    split: str = "test",
    *,
    direction: str | None = None,
    mode: str = "all",
) -> tuple[list[Record], list[Record]]:
    """Query and gallery of one LLCM trial.

    Query: every image of ``query_modality`` (``"ir"``: IR to VIS, ``"vis"``: VIS to IR).
    Gallery: :func:`sample_gallery` of the other modality's images with seed ``trial``
    (0-9 in the reference protocol).

    Args:
        direction: ``"i2v"`` or ``"v2i"`` (the data-set table's vocabulary); when given it
            sets the query modality instead of ``query_modality``.
        mode: the search mode of the data-set table; LLCM has only ``"all"``.

    Returns:
        ``(query, gallery)`` lists of :class:`Record`.
    """
    if direction is not None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        query_modality = DIRECTION_MODALITIES[direction][0]
    if mode not in MODES:
        raise ValueError(f"LLCM has the search mode {MODES[0]!r} only, got {mode!r}")
    if query_modality not in TEST_CAMERAS:
        raise ValueError(f"query_modality must be 'vis' or 'ir', got {query_modality!r}")
    other = other_modality(query_modality)
    query = test_records(root, query_modality, split)
    gallery = sample_gallery(test_records(root, other, split), trial)
    if not query or not gallery:
        empty = query_modality if not query else other
        raise DatasetLayoutError(
            f"the {split} identities of {str(root)!r} have no {empty} images; the LLCM "
            f"protocol needs both (expected files like test_{_FOLDER[empty]}/cam1/0001/*.jpg)"
        )
    return query, gallery


def eval_trials(num_trials: int, data_trial: int = 1) -> list[int]:
    """The trials one evaluation runs: gallery draws ``0 .. num_trials - 1``."""
    return list(range(num_trials))


def all_records(root: str | Path, split: str = "test", trial: int = 1) -> dict[str, list[Record]]:
    """Every image of one split, per modality: ``{"vis": [...], "ir": [...]}``.

    ``"test"`` and ``"val"`` in :func:`test_records` order; ``"train"``: the training
    identities without the held-out ones, in idx-file order. ``trial`` is unused.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train":
        return by_modality(train_records(root, "train"))
    return {m: test_records(root, m, split) for m in ("vis", "ir")}


def ids_without_images(root: str | Path, split: str = "test", trial: int = 1) -> list[int]:
    """The test identities ``idx/test_id.txt`` lists that have no image, sorted (the
    training and validation identities come from the images' idx lines: never empty)."""
    if split != "test":
        return []
    found = {r.pid for m in ("vis", "ir") for r in test_records(root, m, split)}
    return sorted(set(read_test_ids(root)) - found)


def index_files(root: str | Path) -> list[Path]:
    """The idx files (for the data set's fingerprint)."""
    return idx_files(root)


def generate(root: str | Path, **params) -> Path:
    """A synthetic data set in this layout: :func:`csetgraph.data.synthetic.generate_llcm`."""
    return synthetic.generate_llcm(root, **params)
