#!/usr/bin/env python
"""Evaluate runs: a shim for ``csetgraph evaluate`` (see :mod:`csetgraph.commands.evaluate`)."""

from csetgraph.commands.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
