#!/usr/bin/env python
"""Figures of runs: a shim for ``csetgraph visualize`` (see :mod:`csetgraph.commands.visualize`)."""

from csetgraph.commands.visualize import main

if __name__ == "__main__":
    raise SystemExit(main())
