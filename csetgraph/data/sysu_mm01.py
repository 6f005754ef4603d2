"""SYSU-MM01 reader (raw layout) and its test protocol's query/gallery split.

Raw layout, as distributed by the authors (and as :mod:`csetgraph.data.synthetic` writes it)::

    root/cam1 ... cam6/{pid:04d}/{n:04d}.jpg   RGB cameras 1, 2, 4, 5; IR cameras 3, 6
    root/exp/train_id.txt, val_id.txt, test_id.txt   one comma-separated line of pids

No preprocessing to ``.npy`` files is needed: images are read from this layout directly.
"""

from __future__ import annotations

import random
from pathlib import Path

from csetgraph.data.records import DatasetLayoutError, Record

RGB_CAMERAS = (1, 2, 4, 5)
IR_CAMERAS = (3, 6)
#: Gallery cameras of the two search modes.
MODE_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SPLITS = ("train", "val", "test")


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(
            f"SYSU-MM01 folder {str(root)!r} does not exist. Point data.root at the folder that "
            "holds cam1 ... cam6 and exp/ (the raw SYSU-MM01 layout), or leave "
            "data.synthetic.enabled=true to generate a synthetic data set there."
        )
    missing = [f"cam{c}" for c in range(1, 7) if not (root / f"cam{c}").is_dir()]
    if not (root / "exp").is_dir():
        missing.append("exp")
    if missing:
        raise DatasetLayoutError(
            f"{str(root)!r} does not have the SYSU-MM01 layout: missing {', '.join(missing)}. "
            "Expected root/cam1 ... cam6/<pid:04d>/<n:04d>.jpg and "
            "root/exp/{train,val,test}_id.txt."
        )
    return root


def read_ids(root: str | Path, split: str) -> list[int]:
    """The identities of ``split`` (``train``, ``val`` or ``test``) from ``exp/{split}_id.txt``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = _check_root(root)
    path = root / "exp" / f"{split}_id.txt"
    if not path.is_file():
        raise DatasetLayoutError(
            f"missing {str(path)!r}: SYSU-MM01 lists each split's identities in "
            "exp/{train,val,test}_id.txt as one comma-separated line"
        )
    lines = path.read_text().splitlines()
    if not lines or not lines[0].strip():
        raise DatasetLayoutError(f"{str(path)!r} is empty; expected one comma-separated line")
    try:
        return [int(x) for x in lines[0].split(",") if x.strip()]
    except ValueError as err:
        raise DatasetLayoutError(
            f"{str(path)!r}: expected comma-separated integers, got {lines[0][:80]!r}"
        ) from err


def _images(root: Path, camid: int, pid: int) -> list[Path]:
    folder = root / f"cam{camid}" / f"{pid:04d}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())


def train_records(root: str | Path, split: str = "train+val") -> list[Record]:
    """All images of the training identities, pids as in the data set (not relabelled).

    Args:
        root: the SYSU-MM01 folder.
        split: ``"train+val"`` (395 ids; for numbers comparable with published ones) or
            ``"train"`` (296 ids; select models on ``"val"``), or ``"val"``.
    """
    root = _check_root(root)
    parts = split.split("+")
    if any(p not in ("train", "val") for p in parts):
        raise ValueError(f"training split must be 'train', 'val' or 'train+val', got {split!r}")
    pids = sorted({pid for p in parts for pid in read_ids(root, p)})
    records = []
    for pid in pids:
        for camid in range(1, 7):
            modality = "ir" if camid in IR_CAMERAS else "vis"
            records.extend(Record(str(p), pid, camid, modality) for p in _images(root, camid, pid))
    if not records:
        raise DatasetLayoutError(
            f"no images found for the {split} identities under {str(root)!r}; expected files "
            "like cam1/0001/0001.jpg"
        )
    return records


def test_split(
    root: str | Path,
    mode: str = "all",
    trial: int = 0,
    shots: int = 1,
    split: str = "test",
) -> tuple[list[Record], list[Record]]:
    """The query and gallery of one SYSU-MM01 evaluation trial.

    Query: every infrared image (cameras 3 and 6) of the test identities, ids sorted, cameras
    in order, files sorted. Gallery: drawn exactly as the community code does it:
    ``random.seed(trial)``, then for each test id (sorted) and each RGB camera of the mode in
    order (all: 1, 2, 4, 5; indoor: 1, 2), ``random.choice`` of the sorted files
    (single-shot), or ``random.sample`` of 10 of them (multi-shot, ``shots=10``).

    Args:
        root: the SYSU-MM01 folder.
        mode: ``"all"`` or ``"indoor"``.
        trial: the trial number (0-9 in the community protocol); seeds the gallery draw.
        shots: images per identity and camera in the gallery (1 or 10).
        split: ``"test"``, or ``"val"`` to build the same protocol on the validation ids.

    Returns:
        ``(query, gallery)`` lists of :class:`Record`.
    """
    if mode not in MODE_CAMERAS:
        raise ValueError(f"mode must be 'all' or 'indoor', got {mode!r}")
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    root = _check_root(root)
    pids = sorted(read_ids(root, split))
    query = [
        Record(str(p), pid, camid, "ir")
        for pid in pids
        for camid in IR_CAMERAS
        for p in _images(root, camid, pid)
    ]
    rng = random.Random(trial)
    gallery = []
    for pid in pids:
        for camid in MODE_CAMERAS[mode]:
            files = _images(root, camid, pid)
            if not files:
                continue
            if shots == 1:
                chosen = [rng.choice(files)]
            else:
                chosen = rng.sample(files, min(shots, len(files)))
            gallery.extend(Record(str(p), pid, camid, "vis") for p in chosen)
    if not query or not gallery:
        raise DatasetLayoutError(
            f"the {split} identities of {str(root)!r} have no "
            f"{'infrared' if not query else 'visible'} images"
        )
    return query, gallery
