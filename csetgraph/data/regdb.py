"""RegDB reader: the ten train/test splits and the held-out validation identities.

Layout, as distributed by the authors (and as :func:`csetgraph.data.synthetic.generate_regdb`
writes it)::

    root/Visible/...   visible images
    root/Thermal/...   thermal images
    root/idx/{train,test}_{visible,thermal}_{t}.txt   t = 1..10; lines "relative/path label"

The real data set has 412 identities with 10 visible and 10 thermal images each; every
trial ``t`` splits them into 206 training and 206 test identities. The protocol trains one
model per trial and tests it on that trial's test split; the ten results are averaged.

Records: ``pid`` is the label column, modality ``"vis"`` with camera 1 for visible images
and ``"ir"`` with camera 2 for thermal ones.

Model selection: RegDB has no validation split, so a seeded :data:`VAL_FRACTION` of each
trial's training identities is held out (:func:`val_ids`). ``train_records(..., "train")``
leaves them out and ``test_records(..., split="val")`` builds the retrieval protocol on
them; ``"train+val"`` (the default, for numbers comparable with published ones) trains on
all of a trial's training identities.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from csetgraph.data import synthetic
from csetgraph.data.records import (
    Record,
    by_modality,
    check_layout,
    check_listed_files,
    idx_files,
    read_text_file,
)
from csetgraph.errors import DatasetLayoutError, IdFileError

#: The data-set table's entries (see :mod:`csetgraph.data`).
NAME = "RegDB"
PROTOCOL = "regdb"
DIRECTIONS = ("v2i", "i2v")
MODES = ("all",)
REQUIRED = ("Visible", "Thermal", "idx")
EXPECTED = (
    "root/Visible/..., root/Thermal/... and root/idx/{train,test}_{visible,thermal}_{1..10}.txt"
)
#: Splits of :func:`all_records`.
SPLITS = ("train", "val", "test")
VISIBLE_CAMERA = 1
THERMAL_CAMERA = 2
#: Share of the training identities held out for model selection.
VAL_FRACTION = 0.2
#: Training splits the readers accept.
TRAIN_SPLITS = ("train+val", "train", "val")


def hold_out_ids(pids: Sequence[int], fraction: float = VAL_FRACTION, seed: int = 0) -> list[int]:
    """A seeded random subset of ``pids`` held out for validation (sorted).

    ``round(fraction * n)`` identities (at least one, and never all of them) are drawn with
    ``random.Random(seed).sample`` from the sorted distinct pids, so the choice depends only
    on the set of pids and the seed.

    Raises:
        ValueError: fewer than two identities, or a fraction outside (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    distinct = sorted(set(pids))
    if len(distinct) < 2:
        raise ValueError(
            f"cannot hold out validation identities from {len(distinct)} training identity; "
            "the data set needs at least two"
        )
    k = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    return sorted(random.Random(seed).sample(distinct, k))


def check_root(root: str | Path) -> Path:
    """``root`` as a Path if it has the RegDB layout (else :class:`DatasetLayoutError`)."""
    return check_layout(root, NAME, REQUIRED, EXPECTED)


def read_list(path: str | Path) -> list[tuple[str, int]]:
    """Parse an idx file: ``(relative path, label)`` for each non-empty line.

    Raises:
        IdFileError: the file is missing, empty, or has a malformed line (named with
            its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise IdFileError(
            f"missing idx file {str(path)!r}; expected lines 'relative/path label' "
            "(RegDB: idx/{train,test}_{visible,thermal}_{t}.txt for trials t = 1..10; "
            "LLCM: idx/train_vis.txt and idx/train_nir.txt)"
        )
    entries = []
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            entries.append((parts[0], int(parts[1])))
        except ValueError:
            raise IdFileError(
                f"{str(path)!r} line {number}: expected 'relative/path label', got {line[:80]!r}"
            ) from None
    if not entries:
        raise IdFileError(f"idx file {str(path)!r} is empty; expected lines 'relative/path label'")
    return entries


def _records(root: Path, split: str, trial: int) -> tuple[list[Record], list[Record]]:
    """Visible and thermal records of one idx split (``train`` or ``test``) of ``trial``."""
    out = []
    for name, modality, camid in (
        ("visible", "vis", VISIBLE_CAMERA),
        ("thermal", "ir", THERMAL_CAMERA),
    ):
        path = root / "idx" / f"{split}_{name}_{trial}.txt"
        if not path.is_file():
            raise IdFileError(
                f"missing idx file {str(path)!r} (RegDB trial {trial}); RegDB has trials 1-10 "
                "with idx/{train,test}_{visible,thermal}_{t}.txt each; set data.trial to one "
                "of them"
            )
        records = [
            Record(str(root / rel), label, camid, modality) for rel, label in read_list(path)
        ]
        check_listed_files(records, path)
        out.append(records)
    return out[0], out[1]


def val_ids(root: str | Path, trial: int) -> list[int]:
    """The training identities of ``trial`` held out for model selection (seeded by the trial)."""
    vis, ir = _records(check_root(root), "train", trial)
    return hold_out_ids([r.pid for r in vis + ir], VAL_FRACTION, seed=trial)


def train_records(root: str | Path, trial: int = 1, split: str = "train+val") -> list[Record]:
    """The training images of ``trial``, both modalities (visible first), pids as labelled.

    Call it with keywords (``train_records(root, split=..., trial=...)``), as the data-set
    table does: the positional order (``trial`` first) is kept for older callers.

    Args:
        root: the RegDB folder.
        trial: the split, 1-10.
        split: ``"train+val"`` (all the trial's training ids, for comparable numbers),
            ``"train"`` (without the held-out validation ids) or ``"val"`` (only those).
    """
    if split not in TRAIN_SPLITS:
        raise ValueError(f"training split must be one of {TRAIN_SPLITS}, got {split!r}")
    root = check_root(root)
    vis, ir = _records(root, "train", trial)
    records = vis + ir
    if split != "train+val":
        held = set(hold_out_ids([r.pid for r in records], VAL_FRACTION, seed=trial))
        records = [r for r in records if (r.pid in held) == (split == "val")]
    return records


def test_records(
    root: str | Path, trial: int = 1, split: str = "test"
) -> tuple[list[Record], list[Record]]:
    """The visible and the thermal images the protocol compares, in idx-file order.

    ``split="test"`` reads ``idx/test_{visible,thermal}_{trial}.txt`` (every image, nothing
    dropped); ``split="val"`` gives the held-out training identities of :func:`val_ids`.

    Returns:
        ``(visible, thermal)`` lists of :class:`Record`.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    root = check_root(root)
    if split == "test":
        vis, ir = _records(root, "test", trial)
    else:
        records = train_records(root, trial, "val")
        parts = by_modality(records)
        vis, ir = parts["vis"], parts["ir"]
    if not vis or not ir:
        raise DatasetLayoutError(
            f"the {split} split of RegDB trial {trial} in {str(root)!r} has "
            f"{len(vis)} visible and {len(ir)} thermal images; both are needed"
        )
    return vis, ir


def test_split(
    root: str | Path,
    trial: int = 1,
    direction: str = "v2i",
    split: str = "test",
    *,
    mode: str = "all",
) -> tuple[list[Record], list[Record]]:
    """Query and gallery of one direction: ``"v2i"`` (visible to thermal) or ``"i2v"``.

    ``mode`` is the search mode of the data-set table; RegDB has only ``"all"``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if mode not in MODES:
        raise ValueError(f"RegDB has the search mode {MODES[0]!r} only, got {mode!r}")
    vis, ir = test_records(root, trial, split)
    return (vis, ir) if direction == "v2i" else (ir, vis)


def eval_trials(num_trials: int, data_trial: int = 1) -> list[int]:
    """The trials one evaluation runs: only the model's own split ``data_trial`` (1-10).

    RegDB trains one model per trial; the ten runs' results are averaged afterwards.
    """
    return [data_trial]


def all_records(root: str | Path, split: str = "test", trial: int = 1) -> dict[str, list[Record]]:
    """Every image of one split of ``trial``, per modality: ``{"vis": [...], "ir": [...]}``.

    ``"test"``: the trial's test lists; ``"val"``: the held-out training identities;
    ``"train"``: the other training identities. Idx-file order.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train":
        return by_modality(train_records(root, trial, "train"))
    vis, ir = test_records(root, trial, split)
    return {"vis": vis, "ir": ir}


def ids_without_images(root: str | Path, split: str = "test", trial: int = 1) -> list[int]:
    """Always empty: RegDB's identities are the labels of its images' idx lines (for the
    data-set table; SYSU-MM01 and LLCM list identities apart from their images)."""
    check_root(root)
    return []


def index_files(root: str | Path) -> list[Path]:
    """The idx files of all ten trials (for the data set's fingerprint)."""
    return idx_files(root)


def generate(root: str | Path, **params) -> Path:
    """A synthetic data set in this layout: :func:`csetgraph.data.synthetic.generate_regdb`."""
    return synthetic.generate_regdb(root, **params)
