"""The errors a user can cause, and how every command reports them.

Each class names one kind of user mistake (a config value, a data-set folder, a checkpoint, ...).
Commands run their body through :func:`run_command`, which turns any :class:`UserError` into one
line on stderr and exit status 2; ``--debug`` shows the traceback instead. Anything else is a bug
in csetgraph and keeps its traceback.

Every error keeps the built-in base it had before this module existed (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` in user code still catches a config error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def worker_message(text: str) -> str:
    """The one-line message of a user error that a DataLoader worker raised.

    PyTorch re-raises an error from a worker process as ``type(err)(text)``, where ``text``
    is ``"Caught <type> in DataLoader worker process <n>.\nOriginal Traceback ..."`` and
    ends with the original ``module.Type: message`` line; that message is returned. Any
    other text is returned as it is.
    """
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    kind, sep, message = last.partition(": ")
    return message if sep and " " not in kind else last


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it.

    Raised in a DataLoader worker (a corrupt image while evaluating or indexing), it keeps
    its one-line message in the main process too (:func:`worker_message`).
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (worker_message(args[0]),)
        super().__init__(*args)


class ConfigError(UserError, ValueError):
    """A config file, override or command-line option that does not fit the schema or its range."""


class DatasetLayoutError(UserError, FileNotFoundError):
    """A data-set folder that is missing or not in the expected layout."""


class IdFileError(DatasetLayoutError):
    """An id or index file (``exp/*_id.txt``, ``idx/*.txt``) that cannot be read as expected."""


class CorruptImageError(UserError, OSError):
    """An image file that cannot be decoded, or is too small to use."""


class DataFolderError(UserError, FileExistsError):
    """A folder the project would write into that holds somebody else's files."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or weights file that cannot be used for what was asked."""


class RunFolderError(UserError, FileExistsError):
    """A run folder that already holds a run, or is in use by another live process."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite (lower the learning rate, or enable loss scaling)."""


class IndexMismatchError(UserError, ValueError):
    """A gallery index queried with features of another model or width."""


class IndexFolderError(UserError, FileNotFoundError):
    """A gallery-index or export folder that is missing or does not hold what was asked for."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that this command needs is not installed."""


def missing_dependency(package: str, extra: str) -> MissingDependencyError:
    """The error for an optional ``package`` that ships with the ``extra`` install option."""
    return MissingDependencyError(
        f"this needs the optional package {package!r}: "
        f"pip install 'csetgraph[{extra}]' (or: pip install {package})"
    )


def run_command(body: Callable[[], int | None], *, debug: bool = False, name: str = "") -> int:
    """Run a command's ``body`` and turn user errors into one line and exit status 2.

    Args:
        body: the command; returns its exit status (``None`` means 0).
        debug: re-raise instead, so the traceback shows.
        name: the command's name, put in front of the message (``csetgraph train: ...``).

    Returns:
        The exit status: the body's, 2 for a :class:`UserError`, 130 for Ctrl-C.
    """
    prefix = f"{name}: " if name else ""
    try:
        status = body()
    except UserError as err:
        if debug:
            raise
        logging.shutdown()
        print(f"{prefix}error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        if debug:
            raise
        detail = f": {err}" if str(err) else ""  # e.g. where the last checkpoint is
        print(f"{prefix}interrupted{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status is None else int(status)
