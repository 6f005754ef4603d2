"""Threshold calibration against a hand computation, and the open-set result rows."""

from __future__ import annotations

import numpy as np
import pytest

from csetgraph.errors import ConfigError
from csetgraph.retrieval import calibrate_threshold, ranked_hits


def _unit(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_calibration_by_hand():
    # Two queries at 0 and 90 degrees, three gallery items at 0, 60 and 90 degrees.
    q, q_pids = _unit([0, 90]), np.array([1, 2])
    g, g_pids = _unit([0, 60, 90]), np.array([1, 3, 2])
    # Distances 1 - cos: q1 -> (0, 0.5, 1.0); q2 -> (1.0, 1 - cos 30, 0).
    # Genuine pairs: (q1, g1) = 0, (q2, g3) = 0. Impostors sorted: 0.1340, 0.5, 1.0, 1.0.
    impostors = sorted([0.5, 1.0, 1.0, 1 - np.cos(np.radians(30))])
    # Target 25%: m = floor(0.25 * 4) = 1 -> t just below the 2nd impostor (0.5): accepts one.
    cal = calibrate_threshold(q, q_pids, g, g_pids, target_fmr=0.25)
    assert cal.threshold < 0.5 and cal.threshold == pytest.approx(0.5, abs=1e-12)
    assert cal.fmr == 0.25 and cal.tmr == 1.0
    assert (cal.impostor_pairs, cal.genuine_pairs) == (4, 2)
    # Target 1%: m = 0 -> below the nearest impostor (0.1340), genuine pairs at 0 still match.
    cal = calibrate_threshold(q, q_pids, g, g_pids)
    assert cal.threshold == pytest.approx(impostors[0], abs=1e-9)
    assert cal.fmr == 0.0 and cal.tmr == 1.0 and cal.target_fmr == 0.01
    # Target 50%: m = 2 -> below 1.0; the two 1.0 impostors are both rejected (tie).
    cal = calibrate_threshold(q, q_pids, g, g_pids, target_fmr=0.5)
    assert cal.threshold == pytest.approx(1.0) and cal.threshold < 1.0 and cal.fmr == 0.5


def test_calibration_bad_inputs():
    q, g = _unit([0, 90]), _unit([0, 90])
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        calibrate_threshold(q, [1, 2], g, [1, 2], target_fmr=1.5)
    with pytest.raises(ConfigError, match="two identities"):
        calibrate_threshold(q, [1, 1], g, [1, 1])


def test_ranked_hits_marks_no_match_beyond_threshold():
    meta = {i: {"path": f"{i}.png", "pid": i, "camid": 1, "modality": "vis"} for i in range(3)}
    out = ranked_hits(meta, np.array([0.2, 0.4, np.inf]), np.array([2, 0, -1]), threshold=0.3)
    assert [r["index"] for r in out["results"]] == [2, 0]
    assert [r["match"] for r in out["results"]] == [True, False] and out["no_match"] is False
    assert out["results"][0] == {
        "rank": 1,
        "id": 2,
        "index": 2,
        "path": "2.png",
        "pid": 2,
        "camid": 1,
        "distance": 0.2,
        "match": True,
    }
    out = ranked_hits(meta, np.array([0.35, 0.4]), np.array([1, 0]), threshold=0.3)
    assert out["no_match"] is True and not any(r["match"] for r in out["results"])
    out = ranked_hits(meta, np.array([0.35, 0.4]), np.array([1, 0]), threshold=None)
    assert out["no_match"] is False and all(r["match"] for r in out["results"])
    # An id removed between the search and the lookup is left out; ranks stay 1, 2, ...
    del meta[1]
    out = ranked_hits(meta, np.array([0.1, 0.2, 0.3]), np.array([1, 2, 0]), threshold=None)
    assert [(r["rank"], r["id"]) for r in out["results"]] == [(1, 2), (2, 0)]
