#!/usr/bin/env python
"""Table 2: a shim for ``csetgraph complexity`` (see :mod:`csetgraph.commands.complexity`)."""

from csetgraph.commands.complexity import main

if __name__ == "__main__":
    raise SystemExit(main())
