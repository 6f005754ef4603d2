"""``csetgraph``: one command line for training, evaluation, figures and deployment.

    csetgraph --help                       # the commands
    csetgraph train --help                 # one command's options and examples
    csetgraph train train.epochs=3         # = python -m csetgraph train train.epochs=3

Each command lives in ``csetgraph/commands/<name>.py`` and is imported only when it runs, so
``csetgraph --help`` is fast and the core needs none of the deployment packages.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from csetgraph import __version__

#: command -> one-line summary, in the order ``--help`` lists them
COMMANDS = {
    "train": "train CSET from a recipe (synthetic data by default)",
    "evaluate": "evaluate a run with the SYSU-MM01, RegDB or LLCM protocol",
    "visualize": "figures of a run: ranked lists, heat maps, t-SNE, curves",
    "complexity": "parameters and inference time of each Table 1 configuration",
    "inspect": "mechanism health of a trained run, with a verdict per mechanism",
    "export": "export a run's two embedders to ONNX, parity-checked against PyTorch",
    "index": "embed a gallery (a data-set split or a folder) into a faiss index",
    "search": "search a gallery index with query images",
    "serve": "an HTTP service and web page over a gallery index",
}


def available() -> list[str]:
    """The commands whose module is present (found without importing it)."""
    return [n for n in COMMANDS if importlib.util.find_spec(f"csetgraph.commands.{n}")]


def usage() -> str:
    names = available()
    width = max(map(len, names), default=0)
    lines = [f"  {n:<{width}}  {COMMANDS[n]}" for n in names]
    return (
        "usage: csetgraph <command> [options]   (python -m csetgraph <command> ...)\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n"
        "`csetgraph <command> --help` shows a command's options and examples.\n"
        "options: -h/--help, -V/--version"
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to ``csetgraph.commands.<name>.main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"csetgraph {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in available():
        print(
            f"csetgraph: error: unknown command {name!r}; choose one of "
            f"{', '.join(available())} (csetgraph --help)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"csetgraph.commands.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
