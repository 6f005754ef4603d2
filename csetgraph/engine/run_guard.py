"""Run folders: which folder a run writes to, who may write there, and what a resume may change.

Three rules keep a user's runs intact:

* **Never overwritten.** A run name that already holds a run is refused (resume it, or pick
  another name); ``train.overwrite=true`` moves the old folder aside, renamed, never deleted.
* **One writer.** A lock file (``run.lock``, holding the owner's pid and host) makes a second
  live process on the same folder stop with a clear message; a lock whose process is gone is
  taken over with a warning. It is removed when the run ends, however it ends.
* **The config stays true to the run.** On resume the checkpoint's config is the effective one;
  a differing option is refused by name unless it is safe to change (:data:`SAFE_ON_RESUME`).

Nothing here writes until :func:`open_run_folder`, which the trainer calls only after the config,
the data, the model and the checkpoint have all been checked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csetgraph.config import Config, config_from_dict, config_to_dict
from csetgraph.errors import ConfigError, RunFolderError
from csetgraph.files import write_atomic

log = logging.getLogger("csetgraph")

LOCK_NAME = "run.lock"

#: Options a resume may change: they never alter what the run computes. Prefixes end in ".".
SAFE_ON_RESUME = (
    "train.epochs",  # extend a run
    "train.num_threads",
    "train.log_every",
    "train.device",
    "train.compile",
    "data.num_workers",
    "eval.",
)
#: Options that name the run rather than configure it: the resumed folder decides them.
IGNORED_ON_RESUME = ("train.resume", "train.run_name", "train.output_dir", "train.overwrite")


def planned_run_dir(cfg: Config) -> Path:
    """``train.output_dir/train.run_name`` (a timestamp when the name is empty); no writes."""
    name = cfg.train.run_name or time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.train.output_dir) / name


def check_writable_folder(run_dir: Path) -> None:
    """Refuse a run folder that cannot be created or written: a file on its path, or a
    folder the user may not write to (``train.output_dir`` read-only). No writes."""
    run_dir = Path(run_dir)
    for folder in (run_dir, *run_dir.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            key = "train.output_dir" if folder != run_dir else "the run folder"
            raise RunFolderError(
                f"{key} cannot be created: {str(folder)!r} is a file, not a folder; point "
                "train.output_dir at a folder (it is created if missing)"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise RunFolderError(
                f"cannot write the run folder {str(run_dir)!r}: {str(folder)!r} is not "
                "writable; point train.output_dir at a folder you can write to"
            )
        return


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds something, unless it may be moved aside."""
    check_writable_folder(run_dir)
    check_unlocked(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise RunFolderError(
            f"run folder {str(run_dir)!r} already holds a run; resume it with "
            f"train.resume={run_dir}, choose another train.run_name, or set "
            "train.overwrite=true to move the old run aside (it is renamed, not deleted)"
        )


def move_aside(run_dir: Path) -> Path | None:
    """Rename an existing, non-empty ``run_dir`` to ``<name>.replaced-<time>[-n]``."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    os.replace(run_dir, target)
    log.warning("train.overwrite=true: moved the old run %s aside to %s", run_dir, target)
    return target


# --------------------------------------------------------------------------------------------
# the lock


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def lock_owner(run_dir: Path) -> dict[str, Any] | None:
    """The live owner ``{"pid", "host"}`` of ``run_dir``'s lock, or None (no lock, or stale)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}  # unreadable: being written right now; treat as live
    if owner.get("host") != socket.gethostname():
        return owner  # another machine's process: we cannot tell, so respect it
    return owner if _pid_alive(int(owner.get("pid", -1))) else None


def check_unlocked(run_dir: Path) -> None:
    """Raise :class:`RunFolderError` if a live process holds ``run_dir``'s lock."""
    owner = lock_owner(run_dir)
    if owner is not None:
        raise RunFolderError(
            f"run folder {str(run_dir)!r} is in use by process {owner['pid']} on "
            f"{owner['host']!r}; wait for it to finish or choose another train.run_name (if "
            f"that process is gone, delete {str(Path(run_dir) / LOCK_NAME)!r})"
        )


@dataclass
class RunLock:
    """A held lock on a run folder; :meth:`release` removes the file (idempotent)."""

    path: Path

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def acquire_lock(run_dir: Path) -> RunLock:
    """Take ``run_dir``'s lock: created atomically, a stale one (dead pid) taken over."""
    path = Path(run_dir) / LOCK_NAME
    tmp = path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)  # atomic: fails if the lock exists
                return RunLock(path)
            except FileExistsError:
                check_unlocked(run_dir)
                log.warning("taking over the stale lock %s (its process is gone)", path)
                os.unlink(path)
        raise RunFolderError(f"could not take the lock {str(path)!r}; try again")
    finally:
        os.unlink(tmp)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete ``.*.tmp`` files a killed write left in ``folder``; returns how many."""
    stale = list(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink()
    if stale:
        log.warning("removed %d unfinished temporary file(s) in %s", len(stale), folder)
    return len(stale)


# --------------------------------------------------------------------------------------------
# the config of a resumed run


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{full}."))
        else:
            flat[full] = value
    return flat


def _is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_ON_RESUME)


#: Options of a mechanism that nothing reads while the mechanism is off.
_SE_OPTIONS = tuple(
    f"model.se.{k}" for k in ("layers", "alpha", "ratio", "temperature", "similarity")
)
_HEAD_OPTIONS = tuple(
    f"model.triplet.{k}"
    for k in ("heads", "head_dropout", "head_form", "head_norm", "head_identity")
)
_CA_OPTIONS = (
    "model.ca.heads",
    "loss.distill_weight",
    "loss.distill_mutual",
    "loss.ca_identity_weight",
)


def unused_options(cfg: Config) -> set[str]:
    """The options ``cfg``'s model and loss never read: SE's and the ``W'`` heads' without SE,
    CA's (its loss weights included) without CA, the ``W'`` identity weight without that loss."""
    unused = set()
    if cfg.model.se.direction == "none":
        unused.update(_SE_OPTIONS + _HEAD_OPTIONS)
    if cfg.model.se.direction == "none" or not cfg.model.ca.enabled:
        unused.update(_CA_OPTIONS)
    if cfg.model.se.direction == "none" or not cfg.model.triplet.head_identity:
        unused.add("loss.head_identity_weight")
    return unused


def config_differences(saved: Config, requested: Config) -> dict[str, list]:
    """``{key: [saved value, requested value]}`` for every option that differs, ignoring
    where a run is written (``train.output_dir``, ``train.run_name``, ...) and the options
    that neither config reads (:func:`unused_options`: a baseline run is the same run
    whatever CA's loss weights say)."""
    old, new = _flatten(config_to_dict(saved)), _flatten(config_to_dict(requested))
    diff = {k: [old.get(k), new[k]] for k in new if old.get(k) != new[k]}
    ignored = set(IGNORED_ON_RESUME) | (unused_options(saved) & unused_options(requested))
    return {k: v for k, v in diff.items() if k not in ignored}


def format_differences(diff: dict[str, list]) -> str:
    """``"key: run has A, asked B; ..."`` for :func:`config_differences`' output."""
    return "; ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in diff.items())


def resume_config(saved: Config, requested: Config) -> tuple[Config, dict[str, list]]:
    """The effective config of a resumed run, and the safe changes ``{key: [old, new]}``.

    Args:
        saved: the config the checkpoint was trained with.
        requested: the config of the resuming command.

    Raises:
        ConfigError: an option differs that a resume may not change; names each one.
    """
    diff = config_differences(saved, requested)
    refused = {k: v for k, v in diff.items() if not _is_safe(k)}
    if refused:
        listed = format_differences(refused)
        raise ConfigError(
            f"a resumed run keeps its own config, but these options differ: {listed}. "
            "Drop them from the command (the run's checkpoint holds its config), or start a "
            "new run. Only train.epochs, eval.*, train.num_threads, train.log_every, "
            "train.device, train.compile and data.num_workers may change on resume"
        )
    tree = config_to_dict(saved)
    for key, (_, value) in diff.items():
        *sections, last = key.split(".")
        node = tree
        for part in sections:
            node = node[part]
        node[last] = value
    effective = config_from_dict(tree)
    effective.train.resume = requested.train.resume
    return effective, diff


def record_resume(run_dir: Path, epoch: int, changes: dict[str, list]) -> None:
    """Append one resume and its safe config changes to ``resumes.json`` (atomically)."""
    path = Path(run_dir) / "resumes.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "epoch": epoch, "changed": changes})
    write_atomic(path, json.dumps(entries, indent=2))
    for key, (old, new) in changes.items():
        log.info("resume changes %s: %r -> %r (config.yaml keeps the original)", key, old, new)


def check_resumable(resume: str | Path) -> None:
    """A run folder without a complete checkpoint: say so and offer to start over."""
    path = Path(resume)
    if path.is_dir() and not (path / "checkpoints" / "last.pt").is_file():
        raise RunFolderError(
            f"run folder {str(path)!r} has no complete checkpoint yet (it stopped before its "
            "first epoch ended), so there is nothing to resume; start it over with "
            f"train.run_name={path.name} train.overwrite=true (the old folder is moved aside), "
            "or use another train.run_name"
        )
