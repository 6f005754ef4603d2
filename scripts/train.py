#!/usr/bin/env python
"""Train CSET: a shim for ``csetgraph train`` (see :mod:`csetgraph.commands.train`)."""

from csetgraph.commands.train import main

if __name__ == "__main__":
    raise SystemExit(main())
