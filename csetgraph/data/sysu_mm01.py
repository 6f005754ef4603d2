"""SYSU-MM01 reader (raw layout) and its test protocol's query/gallery split.

Raw layout, as distributed by the authors (and as :mod:`csetgraph.data.synthetic` writes it)::

    root/cam1 ... cam6/{pid:04d}/{n:04d}.jpg   RGB cameras 1, 2, 4, 5; IR cameras 3, 6
    root/exp/train_id.txt, val_id.txt, test_id.txt   one comma-separated line of pids

No preprocessing to ``.npy`` files is needed: images are read from this layout directly.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from csetgraph.data.records import Record, by_modality, check_layout, read_id_file
from csetgraph.errors import DatasetLayoutError, IdFileError

#: The data-set table's entries (see :mod:`csetgraph.data`).
NAME = "SYSU-MM01"
PROTOCOL = "sysu"
DIRECTIONS = ("i2v",)
REQUIRED = ("cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp")
EXPECTED = "root/cam1 ... cam6/<pid:04d>/<n:04d>.jpg and root/exp/{train,val,test}_id.txt"
IR_CAMERAS = (3, 6)
#: Gallery cameras of the two search modes.
MODE_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
MODES = tuple(MODE_CAMERAS)
SPLITS = ("train", "val", "test")
#: Gallery draws: the community's seeded one, or the official permutation file.
GALLERY_MODES = ("random", "official")
PERM_FILE = "rand_perm_cam.mat"


def check_root(root: str | Path) -> Path:
    """``root`` as a Path if it has the SYSU-MM01 layout (else :class:`DatasetLayoutError`)."""
    return check_layout(root, NAME, REQUIRED, EXPECTED)


def read_ids(root: str | Path, split: str) -> list[int]:
    """The identities of ``split`` (``train``, ``val`` or ``test``) from ``exp/{split}_id.txt``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = check_root(root)
    path = root / "exp" / f"{split}_id.txt"
    if not path.is_file():
        raise IdFileError(
            f"missing {str(path)!r}: SYSU-MM01 lists each split's identities in "
            "exp/{train,val,test}_id.txt as one comma-separated line"
        )
    ids = read_id_file(path)
    _check_disjoint(root, split, ids)
    return ids


def _check_disjoint(root: Path, split: str, ids: list[int]) -> None:
    """Refuse identities that ``split`` shares with another split's id file (if present).

    Every protocol assumes disjoint identities: a test identity that is also trained on
    inflates the test numbers without a word.
    """
    for other in SPLITS:
        path = root / "exp" / f"{other}_id.txt"
        if other == split or not path.is_file():
            continue
        shared = sorted(set(ids) & set(read_id_file(path)))
        if shared:
            shown = ", ".join(map(str, shared[:10])) + (", ..." if len(shared) > 10 else "")
            first, second = sorted((split, other), key=SPLITS.index)
            raise IdFileError(
                f"exp/{first}_id.txt and exp/{second}_id.txt of {str(root)!r} share "
                f"{len(shared)} identities ({shown}); the splits must be disjoint (a test "
                "identity must never be trained on): remove them from one of the files"
            )


def _images(root: Path, camid: int, pid: int) -> list[Path]:
    """The image files of one identity in one camera, sorted; a symbolic link is listed
    even when it is broken, so that reading it names it instead of skipping it."""
    folder = root / f"cam{camid}" / f"{pid:04d}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_symlink() or p.is_file())


def _split_records(root: Path, pids: list[int], cameras) -> list[Record]:
    """Every image of ``pids`` (sorted) in ``cameras`` (in order), files sorted."""
    return [
        Record(str(p), pid, camid, "ir" if camid in IR_CAMERAS else "vis")
        for pid in sorted(pids)
        for camid in cameras
        for p in _images(root, camid, pid)
    ]


def train_records(root: str | Path, split: str = "train+val", trial: int = 1) -> list[Record]:
    """All images of the training identities, pids as in the data set (not relabelled).

    Args:
        root: the SYSU-MM01 folder.
        split: ``"train+val"`` (395 ids; for numbers comparable with published ones) or
            ``"train"`` (296 ids; select models on ``"val"``), or ``"val"``.
        trial: unused (SYSU-MM01 has one training split); accepted so that every reader of
            the data-set table is called the same way.
    """
    root = check_root(root)
    parts = split.split("+")
    if any(p not in ("train", "val") for p in parts):
        raise ValueError(f"training split must be 'train', 'val' or 'train+val', got {split!r}")
    pids = sorted({pid for p in parts for pid in read_ids(root, p)})
    records = _split_records(root, pids, range(1, 7))
    if not records:
        raise DatasetLayoutError(
            f"no images found for the {split} identities under {str(root)!r}; expected files "
            "like cam1/0001/0001.jpg"
        )
    return records


def official_perm_path(root: str | Path) -> Path | None:
    """The official ``rand_perm_cam.mat`` of the data set folder, or None if it has none.

    Looked up as ``root/exp/rand_perm_cam.mat`` (where the community code keeps it), then
    ``root/rand_perm_cam.mat``. The file comes with the authors' evaluation code
    (``evaluation/data_split/rand_perm_cam.mat`` of the SYSU-MM01 repository).
    """
    root = Path(root)
    for path in (root / "exp" / PERM_FILE, root / PERM_FILE):
        if path.is_file():
            return path
    return None


def load_rand_perm(path: str | Path) -> list[list[np.ndarray]]:
    """Read the official gallery permutations: ``perm[camid - 1][pid - 1]`` is ``(trials, n)``.

    ``rand_perm_cam`` is a MATLAB cell with one entry per camera (1 x 6 or 6 x 1), each a
    cell over identities (entry ``pid - 1``) holding a ``trials x n`` matrix whose rows
    are 1-based permutations of that identity's images in that camera (empty when the
    identity has no image there).

    Raises:
        DatasetLayoutError: a file that is not such a cell.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        raw = loadmat(str(path))["rand_perm_cam"]
        cams = np.asarray(raw, dtype=object).reshape(-1)
        if len(cams) != 6:
            raise ValueError(f"{len(cams)} camera entries instead of 6")
        perm = []
        for cell in cams:
            ids = np.asarray(cell, dtype=object).reshape(-1)
            perm.append([np.atleast_2d(np.asarray(m, dtype=np.int64)) for m in ids])
    except (KeyError, ValueError, TypeError, OSError) as err:
        raise DatasetLayoutError(
            f"{str(path)!r} is not the official SYSU-MM01 rand_perm_cam.mat (a 6-camera cell "
            f"of per-identity trials x images permutations): {err}"
        ) from err
    return perm


def _official_choice(
    perm: list[list[np.ndarray]], files: list[Path], camid: int, pid: int, trial: int, shots: int
) -> list[Path]:
    """The files the official permutation picks for one identity, camera and trial."""
    cam_perm = perm[camid - 1]
    if pid - 1 >= len(cam_perm) or cam_perm[pid - 1].size == 0:
        raise DatasetLayoutError(
            f"{PERM_FILE} has no permutation for identity {pid} in camera {camid}, which has "
            f"{len(files)} images; is it the file for this data set?"
        )
    rows = cam_perm[pid - 1]
    if trial >= rows.shape[0]:
        raise ValueError(f"{PERM_FILE} has {rows.shape[0]} trials; trial {trial} is out of range")
    # The community code names the file after the permutation entry (cam/pid/{n:04d});
    # for SYSU-MM01's contiguously numbered files that is the n-th of the sorted files.
    by_name = {p.stem: p for p in files}
    chosen = []
    for n in rows[trial, :shots].tolist():
        path = by_name.get(f"{n:04d}")
        if path is None:
            if not 1 <= n <= len(files):
                raise DatasetLayoutError(
                    f"{PERM_FILE} picks image {n} of identity {pid} in camera {camid}, which "
                    f"has {len(files)} images; is it the file for this data set?"
                )
            path = files[n - 1]
        chosen.append(path)
    return chosen


def _draw_gallery(
    root: Path, pids: list[int], cameras, trial: int, shots: int, perm
) -> list[Record]:
    """The visible gallery of one trial: ``shots`` files per id and camera (see test_split).

    ``perm`` given: the official permutations; else the community's seeded draw.
    """
    # A private generator seeded like the community code's global random.seed(trial):
    # the same draws, without touching the caller's random state.
    rng = random.Random(trial)
    records = []
    for pid in pids:
        for camid in cameras:
            files = _images(root, camid, pid)
            if not files:
                continue
            if perm is not None:
                chosen = _official_choice(perm, files, camid, pid, trial, shots)
            elif shots == 1:
                chosen = [rng.choice(files)]
            else:
                chosen = rng.sample(files, min(shots, len(files)))
            records.extend(Record(str(p), pid, camid, "vis") for p in chosen)
    return records


def test_split(
    root: str | Path,
    mode: str = "all",
    trial: int = 0,
    shots: int = 1,
    split: str = "test",
    gallery: str = "random",
    perm: list[list[np.ndarray]] | None = None,
    *,
    direction: str = "i2v",
) -> tuple[list[Record], list[Record]]:
    """The query and gallery of one SYSU-MM01 evaluation trial.

    Query: every infrared image (cameras 3 and 6) of the test identities, ids sorted, cameras
    in order, files sorted. Gallery: drawn exactly as the community code does it:
    ``random.seed(trial)``, then for each test id (sorted) and each RGB camera of the mode in
    order (all: 1, 2, 4, 5; indoor: 1, 2), ``random.choice`` of the sorted files
    (single-shot), or ``random.sample`` of ``min(shots, n)`` of them (multi-shot, ``shots=10``;
    seeded per trial the same way).

    With ``gallery="official"`` the draw is replaced by the official permutations of
    ``rand_perm_cam.mat`` (see :func:`load_rand_perm`; looked up by
    :func:`official_perm_path`): the first ``shots`` entries of row ``trial`` for each test id
    and camera, as the community's ``get_gallery_names`` does.

    Args:
        root: the SYSU-MM01 folder.
        mode: ``"all"`` or ``"indoor"``.
        trial: the trial number (0-9 in the community protocol); seeds the gallery draw.
        shots: images per identity and camera in the gallery (1, or 10 for multi-shot).
        split: ``"test"``, or ``"val"`` to build the same protocol on the validation ids.
        gallery: ``"random"`` (the seeded draw) or ``"official"``.
        perm: the already loaded permutations (``load_rand_perm``), to read the file once
            for many trials; default: read it from the data set folder.
        direction: ``"i2v"``, the protocol's only direction (for the data-set table).

    Returns:
        ``(query, gallery)`` lists of :class:`Record`.
    """
    if direction not in DIRECTIONS:
        raise ValueError(
            f"the SYSU-MM01 protocol has infrared queries only: use i2v, got {direction!r}"
        )
    if mode not in MODE_CAMERAS:
        raise ValueError(f"mode must be 'all' or 'indoor', got {mode!r}")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer (1 or 10), got {shots!r}")
    if gallery not in GALLERY_MODES:
        raise ValueError(f"gallery must be one of {GALLERY_MODES}, got {gallery!r}")
    root = check_root(root)
    if gallery == "official" and perm is None:
        path = official_perm_path(root)
        if path is None:
            raise DatasetLayoutError(
                f"gallery='official' needs {PERM_FILE} in {str(root / 'exp')!r} (from "
                "evaluation/data_split/ of the SYSU-MM01 authors' repository); copy it there "
                "or use the seeded random gallery"
            )
        perm = load_rand_perm(path)
    pids = sorted(read_ids(root, split))
    query = _split_records(root, pids, IR_CAMERAS)
    official = perm if gallery == "official" else None
    records = _draw_gallery(root, pids, MODE_CAMERAS[mode], trial, shots, official)
    if not query or not records:
        raise DatasetLayoutError(
            f"the {split} identities of {str(root)!r} have no "
            f"{'infrared' if not query else 'visible'} images"
        )
    return query, records


def eval_trials(num_trials: int, data_trial: int = 1) -> list[int]:
    """The trials one evaluation runs: gallery draws ``0 .. num_trials - 1``."""
    return list(range(num_trials))


def all_records(root: str | Path, split: str = "test", trial: int = 1) -> dict[str, list[Record]]:
    """Every image of the ``split`` identities, per modality: ``{"vis": [...], "ir": [...]}``.

    All six cameras (not one gallery draw), ids sorted, cameras in order, files sorted.
    ``split`` is ``"train"``, ``"val"`` or ``"test"``; ``trial`` is unused.
    """
    root = check_root(root)
    records = _split_records(root, read_ids(root, split), range(1, 7))
    return by_modality(records)


def ids_without_images(root: str | Path, split: str = "test", trial: int = 1) -> list[int]:
    """The identities ``exp/{split}_id.txt`` lists that have no image in any camera, sorted."""
    root = check_root(root)
    return sorted(
        pid for pid in read_ids(root, split) if not any(_images(root, c, pid) for c in range(1, 7))
    )


def index_files(root: str | Path) -> list[Path]:
    """The files besides the images that define the data set (for its fingerprint)."""
    root = Path(root)
    files = [root / "exp" / f"{s}_id.txt" for s in SPLITS]
    perm = official_perm_path(root)
    return [p for p in files if p.is_file()] + ([perm] if perm else [])


def generate(root: str | Path, **params) -> Path:
    """A synthetic data set in this layout: :func:`csetgraph.data.synthetic.generate_sysu_mm01`."""
    from csetgraph.data import synthetic  # lazily: synthetic reads this module's cameras

    return synthetic.generate_sysu_mm01(root, **params)
