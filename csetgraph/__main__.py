"""``python -m csetgraph <command> ...`` is the ``csetgraph`` command line."""

from csetgraph.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
