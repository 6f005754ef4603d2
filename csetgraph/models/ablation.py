"""The six model configurations of the paper's Table 1 (and Table 2), and two component rows
the paper does not have, as config overrides."""

from __future__ import annotations

import copy

from csetgraph.config import Config

#: (row name, SE direction, CA, MHGA), in the paper's order; the first row is the baseline.
TABLE1 = (
    ("baseline", "none", False, False),
    ("SE i2v", "i2v", False, False),
    ("SE v2i", "v2i", False, False),
    ("SE both", "both", False, False),
    ("SE both + CA", "both", True, False),
    ("SE both + CA + MHGA", "both", True, True),
)

#: Rows the paper's table does not have, in the same form: MHGA without SE and CA, and full
#: CSET without CA. With Table 1's rows they split full CSET's effect into MHGA's, SE's and
#: CA's parts (docs/results-mechanisms.md, "MHGA alone").
COMPONENT_ROWS = (
    ("MHGA alone", "none", False, True),
    ("SE both + MHGA", "both", False, True),
)


def ablation_config(cfg: Config, row: str) -> Config:
    """A copy of ``cfg`` with the switches of ``row``, a row of :data:`TABLE1` or
    :data:`COMPONENT_ROWS` (other settings kept).

    ``model.se.layers`` is kept from ``cfg``, so the recipe decides where SE happens.
    """
    rows = {name: (se, ca, mhga) for name, se, ca, mhga in TABLE1 + COMPONENT_ROWS}
    if row not in rows:
        raise ValueError(f"unknown Table 1 row {row!r}; rows: {', '.join(rows)}")
    se, ca, mhga = rows[row]
    out = copy.deepcopy(cfg)
    out.model.se.direction = se
    if se != "none" and not out.model.se.layers:
        raise ValueError("model.se.layers is empty: set the blocks after which SE happens")
    out.model.ca.enabled = ca
    out.model.mhga.enabled = mhga
    return out
