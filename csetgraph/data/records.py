"""The record every reader returns, and image loading with errors that name the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from csetgraph.errors import CorruptImageError, DatasetLayoutError

MODALITIES = ("vis", "ir")
# The one direction vocabulary: "<query>2<gallery>" in lower case, i = infrared, v = visible.
DIRECTIONS = {"i2v": ("ir", "vis"), "v2i": ("vis", "ir")}


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


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, or raise :class:`CorruptImageError` naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
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


def relabel(records: list[Record]) -> tuple[list[Record], dict[int, int]]:
    """Map pids to 0..C-1 in sorted order (the same in every process) and apply the map."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.path, mapping[r.pid], r.camid, r.modality) for r in records], mapping


def read_id_line(path: Path) -> list[int]:
    """Identities listed as one comma-separated line (SYSU-MM01 ``exp/``, LLCM ``idx/``)."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].strip():
        raise DatasetLayoutError(f"{str(path)!r} is empty; expected one comma-separated line")
    try:
        return [int(x) for x in lines[0].split(",") if x.strip()]
    except ValueError as err:
        raise DatasetLayoutError(
            f"{str(path)!r}: expected comma-separated integers, got {lines[0][:80]!r}"
        ) from err
