"""The decode-once image cache: every training image as uint8 at the training size.

The PIL path decodes, resizes and converts every image at every step. The cache does the
decode and the resize once, with the PIL path's own resize (``torchvision.transforms.Resize``
on the PIL image: bilinear with Pillow's antialiasing), so a cached image is byte-identical to
what the PIL path feeds its augmentation. Padding is not stored: the pad-and-crop pads with
zeros on the fly (:func:`csetgraph.data.batch_transforms.pad_crop`), which keeps the cache
``(H + 2 pad)(W + 2 pad) / (H W)`` smaller and independent of ``data.pad``.

On disk, one cache is two files in the cache folder::

    train-<H>x<W>-<fingerprint>.npy    (N, 3, H, W) uint8, read as a memory map
    train-<H>x<W>-<fingerprint>.json   the manifest: fingerprint, size, files, resize method

The fingerprint hashes the ordered file list with each file's size and modification time, the
target size and the resize method, so a changed data set (a file added, removed, replaced or
touched) gets a new cache and an unchanged one reuses its own. The ``.npy`` is written under a
temporary name and moved into place (:mod:`csetgraph.files`), then the manifest the same way;
only a cache with its manifest is ever used, so an interrupted build leaves no half cache behind
(at worst a hidden ``.*.tmp`` file, which is never read). A ``.lock`` file beside them makes a
second process wait for a build in progress rather than start its own.

The cache folder is ``data.cache_dir`` if set, else ``$CSETGRAPH_CACHE_DIR``, else
``$XDG_CACHE_HOME/csetgraph``, else ``~/.cache/csetgraph``; nothing is written inside the data
set's folder unless one of these points there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler
from tqdm import tqdm

from csetgraph.data.records import load_image
from csetgraph.errors import CorruptImageError
from csetgraph.files import atomic_path, write_atomic

CACHE_VERSION = 1
#: How the images were resized: part of the fingerprint, so a change of method rebuilds.
RESIZE_METHOD = "torchvision.transforms.Resize(PIL, bilinear, antialias)"


def default_cache_dir() -> Path:
    """``$CSETGRAPH_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/csetgraph``, else
    ``~/.cache/csetgraph``."""
    if os.environ.get("CSETGRAPH_CACHE_DIR"):
        return Path(os.environ["CSETGRAPH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "csetgraph"


def fingerprint(paths: Sequence[str], height: int, width: int) -> str:
    """A hex digest of the ordered files (path, size, mtime), the target size and the resize.

    Raises:
        CorruptImageError: a file does not exist.
    """
    digest = hashlib.sha256()
    head = {"version": CACHE_VERSION, "size": [height, width], "resize": RESIZE_METHOD}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError as err:
            raise CorruptImageError(f"image file {str(path)!r} does not exist") from err
        digest.update(f"\n{os.path.abspath(path)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageCache:
    """A finished cache: its array file and the number and size of its images."""

    path: Path
    num_images: int
    height: int
    width: int
    fingerprint: str

    def open(self) -> np.ndarray:
        """The ``(N, 3, H, W)`` uint8 array, memory-mapped read-only (cheap; call per process)."""
        return np.load(self.path, mmap_mode="r")


def ensure_cache(
    paths: Sequence[str],
    height: int,
    width: int,
    cache_dir: str | Path | None = None,
    *,
    num_workers: int = 0,
    progress: bool = True,
) -> ImageCache:
    """Return the cache of ``paths`` at ``height x width``, building it first if needed.

    Args:
        paths: the image files, in the order the cache indexes them.
        height, width: the training size.
        cache_dir: where caches live (``None`` or ``""``: :func:`default_cache_dir`).
        num_workers: decoding processes for a build.
        progress: show a progress bar while building.
    """
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    key = fingerprint(paths, height, width)
    stem = folder / f"train-{height}x{width}-{key[:20]}"
    cache = ImageCache(stem.with_suffix(".npy"), len(paths), height, width, key)
    manifest = stem.with_suffix(".json")
    if _is_complete(cache, manifest):
        return cache
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(stem.with_suffix(".lock")):
        if not _is_complete(cache, manifest):  # another process may have built it meanwhile
            _build(cache, paths, num_workers=num_workers, progress=progress)
            _write_manifest(cache, paths, manifest)
    return cache


def _write_manifest(cache: ImageCache, paths: Sequence[str], path: Path) -> None:
    manifest = {
        "version": CACHE_VERSION,
        "fingerprint": cache.fingerprint,
        "num_images": cache.num_images,
        "shape": [cache.num_images, 3, cache.height, cache.width],
        "dtype": "uint8",
        "resize": RESIZE_METHOD,
        "files": [os.path.abspath(p) for p in paths],
    }
    write_atomic(path, json.dumps(manifest))


@contextlib.contextmanager
def _build_lock(path: Path):
    """Hold an exclusive lock on ``path`` while building, so that a second process (another
    ``torchrun`` rank) waits for the first one's cache instead of decoding everything again.
    The OS releases it if the holder dies. Without ``fcntl`` (Windows) builds race instead,
    which is safe (every file is moved into place whole), only slower."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(cache: ImageCache, manifest_path: Path) -> bool:
    """The manifest exists, names this fingerprint, and the array has the expected shape."""
    try:
        manifest = json.loads(manifest_path.read_text())
        shape = np.load(cache.path, mmap_mode="r").shape
    except (OSError, ValueError):
        return False
    expected = (cache.num_images, 3, cache.height, cache.width)
    return manifest.get("fingerprint") == cache.fingerprint and tuple(shape) == expected


class _DecodeResize(Dataset):
    """Batches of decoded, resized images; an unreadable file comes back as its error message
    (raised in the main process, so the user sees one line, not a worker's traceback)."""

    def __init__(self, paths: Sequence[str], height: int, width: int) -> None:
        self.paths = list(paths)
        self.resize = T.Resize((height, width))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices: list[int]) -> torch.Tensor | str:
        out = []
        for i in indices:
            try:
                img = self.resize(load_image(self.paths[i]))
            except CorruptImageError as err:
                return str(err)
            out.append(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))
        return torch.stack(out)  # (b, 3, H, W)


def _build(cache: ImageCache, paths: Sequence[str], *, num_workers: int, progress: bool) -> None:
    """Decode into a temporary ``.npy`` beside the final one, then move it into place."""
    shape = (cache.num_images, 3, cache.height, cache.width)
    chunks = BatchSampler(SequentialSampler(range(len(paths))), batch_size=64, drop_last=False)
    loader = DataLoader(
        _DecodeResize(paths, cache.height, cache.width),
        sampler=chunks,
        batch_size=None,
        num_workers=num_workers,
        generator=torch.Generator(),  # leave the global RNG as it was: a build changes no run
    )
    with atomic_path(cache.path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        bar = tqdm(total=len(paths), desc="caching training images", disable=not progress)
        start = 0
        for batch in loader:
            if isinstance(batch, str):
                raise CorruptImageError(batch)
            array[start : start + len(batch)] = batch.numpy()
            start += len(batch)
            bar.update(len(batch))
        bar.close()
        array.flush()
        del array


__all__ = ["ImageCache", "default_cache_dir", "ensure_cache", "fingerprint"]
