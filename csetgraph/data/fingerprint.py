"""Data-set fingerprints: which data a run trained and was evaluated on.

Data sets change after publication (LLCM's authors replaced part of theirs, and numbers rose
without any change to a method: DEEN/LLCM issue #28), and two copies on two machines can
differ by a failed download. A fingerprint records what the readers actually read:

* the sorted relative paths and sizes of every image a split references and of the id/idx
  files that define the splits (``stat`` only: fast on SYSU-MM01's 30k images, no hashing
  of contents);
* the identities of each split (``train``, ``val``, ``test``);
* the number of images per modality.

Its :attr:`DatasetFingerprint.digest` (16 hex digits of a SHA-256 over all of it) is equal
for two copies exactly when they agree on all of that. :meth:`DatasetFingerprint.to_dict`
is what runs record (``config.yaml``/``metrics.json``) and :func:`compare_fingerprints`
says in words how a recorded fingerprint and a current one differ.

>>> fp = dataset_fingerprint("data/synthetic_sysu_mm01", "sysu_mm01")  # doctest: +SKIP
>>> fp.digest, fp.to_dict()["images"]                                   # doctest: +SKIP
('3f0c...', {'vis': 4032, 'ir': 2016})
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Bump when what the digest covers changes, so old and new digests are never compared.
FINGERPRINT_VERSION = 1
_DIGEST_CHARS = 16


@dataclass(frozen=True)
class DatasetFingerprint:
    """What a data-set folder holds, as the readers see it.

    Attributes:
        dataset: the ``data.dataset`` name.
        trial: the trial the splits were read with (RegDB's split; 1 for the others).
        files: ``(relative path, size in bytes)`` of every file covered, sorted by path.
        ids: the sorted identities of each split.
        images: the number of images per modality (over all splits).
    """

    dataset: str
    trial: int
    files: tuple[tuple[str, int], ...]
    ids: dict[str, tuple[int, ...]]
    images: dict[str, int]

    @property
    def digest(self) -> str:
        """16 hex digits of a SHA-256 over everything above."""
        payload = json.dumps(
            {
                "version": FINGERPRINT_VERSION,
                "dataset": self.dataset,
                "trial": self.trial,
                "files": self.files,
                "ids": self.ids,
                "images": self.images,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:_DIGEST_CHARS]

    def to_dict(self) -> dict:
        """A short summary for config.yaml/metrics.json: counts per split and the digests."""
        return {
            "version": FINGERPRINT_VERSION,
            "dataset": self.dataset,
            "trial": self.trial,
            "digest": self.digest,
            "files": len(self.files),
            "bytes": sum(size for _, size in self.files),
            "paths_digest": _short_hash([path for path, _ in self.files]),
            "ids": {split: len(ids) for split, ids in self.ids.items()},
            "ids_digest": {split: _short_hash(list(ids)) for split, ids in self.ids.items()},
            "images": dict(self.images),
        }


def _short_hash(values: list) -> str:
    text = json.dumps(values, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]


def _relative(path: str | Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _size(path: str | Path) -> int:
    """The file's size; -1 when it cannot be read (a broken link: reading it names it)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def dataset_fingerprint(root: str | Path, dataset: str, trial: int = 1) -> DatasetFingerprint:
    """The fingerprint of the ``dataset`` folder ``root`` (read through the data-set table).

    Args:
        root: the data-set folder (``data.root``).
        dataset: its ``data.dataset`` name.
        trial: ``data.trial`` (RegDB reads its splits per trial; the others ignore it).

    Raises:
        ConfigError: an unknown ``dataset``.
        DatasetLayoutError: the folder does not have the data set's layout.
    """
    from csetgraph.data import get_dataset

    ds = get_dataset(dataset)
    root = ds.check_root(root)
    ids: dict[str, tuple[int, ...]] = {}
    paths: set[str] = set()
    images = dict.fromkeys(("vis", "ir"), 0)
    for split in ds.SPLITS:
        per_modality = ds.all_records(root, split=split, trial=trial)
        ids[split] = tuple(sorted({r.pid for recs in per_modality.values() for r in recs}))
        for modality, records in per_modality.items():
            images[modality] += len(records)
            paths.update(r.path for r in records)
    paths.update(str(p) for p in ds.index_files(root))
    files = tuple(sorted((_relative(p, root), _size(p)) for p in paths))
    return DatasetFingerprint(dataset, trial, files, ids, images)


def compare_fingerprints(recorded: dict, current: dict) -> list[str]:
    """How two :meth:`DatasetFingerprint.to_dict` summaries differ, in words (empty: equal).

    For the warning a command prints when a run is evaluated on other data than it was
    trained on, e.g. ``["test ids: 96 recorded, 95 now", "bytes: 5120 recorded, 5087 now"]``.
    """
    if recorded.get("digest") == current.get("digest"):
        return []
    if recorded.get("version") != current.get("version"):
        return [
            f"fingerprint version {recorded.get('version')} recorded, {current.get('version')} "
            "now (recorded by another csetgraph version; cannot compare)"
        ]
    out = []
    for key in ("dataset", "trial", "files", "bytes", "paths_digest"):
        if recorded.get(key) != current.get(key):
            out.append(f"{key}: {recorded.get(key)} recorded, {current.get(key)} now")
    for key in ("ids", "ids_digest", "images"):
        old, new = recorded.get(key) or {}, current.get(key) or {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                what = f"{name} {key.replace('_', ' ')}"
                out.append(f"{what}: {old.get(name)} recorded, {new.get(name)} now")
    return out or ["digest differs (file sizes changed)"]
