"""What every reader shares: the record, image loading, layout checks and id/idx files.

Errors name the file and the fix: :class:`~csetgraph.errors.DatasetLayoutError` for a folder
that is missing or not in the expected layout, :class:`~csetgraph.errors.IdFileError` for an
id or idx file that cannot be read or lists images that do not exist, and
:class:`~csetgraph.errors.CorruptImageError` for an image that cannot be decoded.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from csetgraph.errors import CorruptImageError, DatasetLayoutError, IdFileError
from csetgraph.modalities import DIRECTIONS, MODALITIES, other_modality  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Record:
    """One image of a VI-ReID data set.

    Attributes:
        path: the image file.
        pid: the identity as the data set numbers it (test) or relabelled 0..C-1 (train).
        camid: the camera number as the data set numbers it.
        modality: ``"vis"`` or ``"ir"``.
    """

    path: str
    pid: int
    camid: int
    modality: str


#: Pillow modes of one channel deeper than 8 bits: 16-bit greyscale (thermal cameras' usual
#: PNG), 32-bit integer and 32-bit float.
_DEEP_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def image_to_rgb(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB: the one conversion every image goes through.

    Training, evaluation, indexing, search and the service all read images with it (through
    :func:`load_image`, or directly for uploaded bytes), so the same picture gives the same
    embedding whatever its file format.

    An 8-bit image (RGB, greyscale, palette, ...) is converted as Pillow does. A one-channel
    image deeper than 8 bits (16-bit greyscale PNG, 32-bit integer or float TIFF) is scaled
    by its own range, as a thermal camera's automatic gain does:

    ``y = round(255 * (x - min(x)) / (max(x) - min(x)))``

    (a constant image becomes black). Pillow's own conversion clips such values at 255,
    so a 16-bit frame would turn almost entirely white.
    """
    if img.mode not in _DEEP_GREY_MODES:
        return img.convert("RGB")
    values = np.asarray(img, dtype=np.float64)  # (H, W)
    low, high = float(values.min()), float(values.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = np.rint((values - low) * scale).astype(np.uint8)  # (H, W)
    return Image.fromarray(grey).convert("RGB")  # uint8 (H, W): mode L


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB (:func:`image_to_rgb`), or raise
    :class:`CorruptImageError` naming the file (a dangling or looping symbolic link too)."""
    try:
        with Image.open(path) as img:
            return image_to_rgb(img)
    except FileNotFoundError as err:
        if os.path.islink(path):
            raise CorruptImageError(
                f"image file {str(path)!r} is a symbolic link to {os.readlink(path)!r}, which "
                "does not exist; replace the link with the image, or set "
                "data.skip_corrupt=true to skip unreadable images"
            ) from err
        raise CorruptImageError(f"image file {str(path)!r} does not exist") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(
            f"cannot read image {str(path)!r} ({err}); replace the file, or set "
            "data.skip_corrupt=true to skip unreadable images"
        ) from err


def check_images(records: list[Record]) -> tuple[list[Record], list[str]]:
    """Fully decode every image; return the readable records and the unreadable paths."""
    good, bad = [], []
    for rec in records:
        try:
            with Image.open(rec.path) as img:
                img.load()
            good.append(rec)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(rec.path)
    return good, bad


def by_modality(records: Sequence[Record]) -> dict[str, list[Record]]:
    """``{"vis": [...], "ir": [...]}``: the records of each modality, order kept."""
    return {m: [r for r in records if r.modality == m] for m in MODALITIES}


def idx_files(root: str | Path) -> list[Path]:
    """The ``.txt`` files of ``root/idx`` (RegDB's and LLCM's id/idx lists), sorted."""
    folder = Path(root) / "idx"
    return sorted(p for p in folder.glob("*.txt") if p.is_file()) if folder.is_dir() else []


def relabel(records: list[Record]) -> tuple[list[Record], dict[int, int]]:
    """Map pids to 0..C-1 in sorted order (the same in every process) and apply the map."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.path, mapping[r.pid], r.camid, r.modality) for r in records], mapping


def check_layout(root: str | Path, name: str, required: Sequence[str], expected: str) -> Path:
    """``root`` as a :class:`Path` if it is a folder holding every sub-folder of ``required``.

    The one root check of every reader (each data-set module's ``check_root`` calls it).

    Args:
        root: the data-set folder (``data.root``).
        name: the data set's display name, for messages (``"SYSU-MM01"``).
        required: sub-folders that must exist, in the order they are reported.
        expected: the layout in a few words, for messages.

    Raises:
        DatasetLayoutError: ``root`` does not exist, or sub-folders are missing (all named).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(
            f"{name} folder {str(root)!r} does not exist. Point data.root at the folder that "
            f"holds {', '.join(required)} (expected: {expected}), or set "
            "data.synthetic.enabled=true to generate a synthetic data set there."
        )
    missing = [d for d in required if not (root / d).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{str(root)!r} does not have the {name} layout: missing {', '.join(missing)}. "
            f"Expected {expected}."
        )
    return root


def read_text_file(path: str | Path) -> str:
    """The text of an id or idx file: UTF-8, with or without a byte-order mark.

    Raises:
        IdFileError: the file holds bytes that are not UTF-8 (named with their offset).
    """
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise IdFileError(
            f"{str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); an id or idx file holds plain ASCII numbers and paths: save it "
            "as UTF-8"
        ) from None


def read_id_file(path: str | Path) -> list[int]:
    """The identities an id file lists (SYSU-MM01 ``exp/*_id.txt``, LLCM ``idx/test_id.txt``).

    The data sets write one comma-separated line; a file with one id per line (or several
    comma-separated lines) is read whole, never just its first line. Blank lines are skipped.

    Raises:
        IdFileError: the file is empty, holds something other than integers (named with its
            line number), or lists an id twice.
    """
    path = Path(path)
    ids: list[int] = []
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        try:
            ids.extend(int(x) for x in line.split(",") if x.strip())
        except ValueError:
            raise IdFileError(
                f"{str(path)!r} line {number}: expected comma-separated integers, got "
                f"{line[:80]!r}; an id file lists identities as 1,2,3 (one line) or one per line"
            ) from None
    if not ids:
        raise IdFileError(f"{str(path)!r} is empty; expected comma-separated identities (1,2,3)")
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise IdFileError(
            f"{str(path)!r} lists identities more than once: {twice[:5]}; each identity "
            "belongs in one place of one split"
        )
    return ids


def check_listed_files(records: Sequence[Record], listing: str | Path, show: int = 5) -> None:
    """Raise :class:`IdFileError` if images that ``listing`` (an idx file) names do not exist.

    Checked when the data set is read, so a wrong path fails at start-up, not mid-epoch.
    The message names the first ``show`` missing files, then how many more there are.
    """
    missing = [r.path for r in records if not os.path.isfile(r.path)]
    if not missing:
        return
    more = f", and {len(missing) - show} more" if len(missing) > show else ""
    raise IdFileError(
        f"{str(listing)!r} lists {len(missing)} of {len(records)} images that do not exist: "
        f"{', '.join(repr(p) for p in missing[:show])}{more}. Its paths are relative to "
        "data.root: check that data.root is the data set's top folder and the copy is complete."
    )


def small_images(records: Sequence[Record], min_side: int) -> list[tuple[str, int, int]]:
    """``(path, width, height)`` of the images narrower or lower than ``min_side`` pixels.

    Reads only the image headers (fast). Unreadable images are left to :func:`load_image`
    and :func:`check_images`, which name them.
    """
    small = []
    for rec in records:
        try:
            with Image.open(rec.path) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            continue
        if min(width, height) < min_side:
            small.append((rec.path, width, height))
    return small


def warn_small_images(records: Sequence[Record], min_side: int) -> int:
    """Log a warning with a count if images are smaller than ``min_side`` (one patch).

    Such an image is stretched to the input size and carries almost nothing the model can
    learn from; a few are harmless, many mean a broken copy. Returns how many there are.
    """
    small = small_images(records, min_side)
    if small:
        path, width, height = small[0]
        log.warning(
            "%d of %d images are smaller than one %dx%d patch (e.g. %s, %dx%d pixels); they "
            "are stretched to the input size and carry almost no information: check the "
            "data set copy, or remove them",
            len(small),
            len(records),
            min_side,
            min_side,
            path,
            width,
            height,
        )
    return len(small)
