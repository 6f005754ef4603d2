"""Writing files safely: a reader sees the old file or the new one, never half of one.

Every file csetgraph writes (configs, checkpoints, metrics, figures, index files, the synthetic
data set's marker, the image cache) goes through this module. The new content is written to a
temporary file in the destination's own folder, flushed to disk with ``fsync``, and renamed
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows when both
names are on one file system (the same folder guarantees it). A crash, a full disk or an
exception while writing leaves the previous file as it was and removes the temporary one.

>>> write_atomic("runs/x/metrics.json", json.dumps(results))     # text or bytes
>>> with atomic_path("figures/ranked.png", keep_suffix=True) as tmp:
...     fig.savefig(tmp)                                          # any writer that takes a path

Temporary files are named ``.<name>.<pid>-<random>.tmp`` (``keep_suffix`` appends the
destination's suffix, for writers that choose a format by it), so a write killed by SIGKILL
leaves a hidden ``.*.tmp`` file that :func:`csetgraph.engine.run_guard.remove_stale_temporaries`
removes. A new file gets the permissions an ordinary ``open(path, "w")`` would give it (``0o666``
less the umask); a replaced file keeps its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


def _temporary_name(path: Path, keep_suffix: bool) -> Path:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    if keep_suffix:
        return path.with_name(f".{path.stem}.{token}.tmp{path.suffix}")
    return path.with_name(f".{path.name}.{token}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block ends without error.

    The block writes the temporary file by its name (``torch.save``, ``savefig``, safetensors,
    a numpy memmap, an ONNX program). When it ends normally the file is flushed to disk and
    renamed over ``path``; when it raises, the temporary file is removed and ``path`` is left
    as it was. The parent folder is created if missing.

    Args:
        path: The destination.
        keep_suffix: End the temporary name with ``path``'s suffix (``.tmp.png``), for writers
            that pick the format from the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path, keep_suffix)
    # Create it first with open()'s permissions (0o666 less the umask), so a writer that
    # opens the name again keeps them.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # a replaced file keeps its mode
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically (see :func:`atomic_path`)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


__all__ = ["atomic_path", "write_atomic"]
