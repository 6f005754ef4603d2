"""Multi-seed Table 1 and sweeps: the statistics against scipy, the scripts end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from csetgraph.errors import ConfigError
from csetgraph.experiments import parse_sweep, summarise, t_interval

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.se.layers=[0]"]
TINY += ["model.ca.heads=2", "model.mhga.heads=2", "data.height=32", "data.width=16"]
TINY += [
    "model.se.ratio=0.5",
    "model.pretrained=",
    "data.num_ids_per_batch=2",
    "data.num_instances=2",
]
TINY += ["data.num_workers=0", "train.epochs=1", "train.max_steps_per_epoch=1"]
TINY += ["eval.trials=2", "eval.modes=[all]", "data.synthetic.enabled=false"]


def run(script, *args, ok=True):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("values", [[0.1, 0.4, 0.35], [0.5, 0.52, 0.49, 0.61, 0.5], [1.0, -2.0]])
def test_t_interval_matches_scipy(values):
    mean, lo, hi = t_interval(values, 0.95)
    ref_lo, ref_hi = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert mean == pytest.approx(np.mean(values))
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi))


def test_one_seed_has_no_interval():
    mean, lo, hi = t_interval([0.3])
    assert mean == 0.3 and math.isnan(lo) and math.isnan(hi)


def test_summarise_pairs_rows_by_seed():
    # Hand-made: the row beats the baseline by exactly 0.1 on every seed, although the
    # seeds spread by 0.4, so the paired interval collapses onto 0.1.
    runs = {
        "baseline": {0: {"all/rank1": 0.2}, 1: {"all/rank1": 0.6}, 2: {"all/rank1": 0.4}},
        "SE both": {1: {"all/rank1": 0.7}, 0: {"all/rank1": 0.3}, 2: {"all/rank1": 0.5}},
    }
    out = summarise(runs, "baseline")["SE both"]["all/rank1"]
    assert out["mean"] == pytest.approx(0.5) and out["std"] == pytest.approx(0.2)
    assert out["diff"] == pytest.approx(0.1)
    assert out["diff_low"] == pytest.approx(0.1) and out["diff_high"] == pytest.approx(0.1)
    runs["SE both"].pop(2)
    with pytest.raises(ConfigError, match="seeds"):
        summarise(runs, "baseline")


def test_parse_sweep():
    assert parse_sweep("model.se.alpha=0.1, 0.5,0.9") == ("model.se.alpha", ["0.1", "0.5", "0.9"])
    for bad in ("model.se.alpha", "model.se.alpha=", "=0.1"):
        with pytest.raises(ConfigError, match="key=v1,v2"):
            parse_sweep(bad)


def _metrics(run_dir: Path) -> dict[str, float]:
    """A run's own metrics.json, read independently of the table code."""
    res = json.loads((run_dir / "metrics.json").read_text())
    return {f"{s}/{m}": v for s, r in res.items() for m, v in r["mean"].items()}


@pytest.mark.slow
def test_ablate_two_seeds_writes_intervals(sysu_root, tmp_path):
    rows = ["baseline", "SE both + CA + MHGA"]
    run(
        "ablate.py", "--no-progress", "--seeds", "2", "--rows", ",".join(rows),
        *TINY, f"data.root={sysu_root}", f"train.output_dir={tmp_path}",
    )  # fmt: skip
    out = tmp_path / "ablation"
    table = json.loads((out / "table.json").read_text())
    assert table["seeds"] == [0, 1] and list(table["rows"]) == rows
    per_run = {
        r: [_metrics(out / r.replace(" + ", "+").replace(" ", "_") / f"seed{s}") for s in (0, 1)]
        for r in rows
    }
    for metric in ("all/rank1", "all/mAP"):
        base = [m[metric] for m in per_run["baseline"]]
        full = [m[metric] for m in per_run[rows[1]]]
        got = table["rows"][rows[1]][metric]
        assert got["mean"] == pytest.approx(np.mean(full))
        assert got["std"] == pytest.approx(np.std(full, ddof=1))
        d = np.subtract(full, base)
        if np.ptp(d) > 0:
            lo, hi = stats.t.interval(0.95, 1, loc=d.mean(), scale=stats.sem(d))
            assert (got["diff_low"], got["diff_high"]) == pytest.approx((lo, hi))
        else:  # both seeds gave the same difference: a zero-width interval
            assert got["diff_low"] == pytest.approx(d[0]) == got["diff_high"]
    md = (out / "table.md").read_text()
    assert "| SE both + CA + MHGA |" in md and "95% t-interval" in md and " [" in md


@pytest.mark.slow
def test_sweep_writes_table_and_plots(sysu_root, tmp_path):
    run(
        "sweep.py", "model.se.alpha=0.3,0.9", "--seeds", "2", "--no-progress",
        *TINY, f"data.root={sysu_root}", f"train.output_dir={tmp_path}",
    )  # fmt: skip
    out = tmp_path / "sweep_model.se.alpha"
    table = json.loads((out / "table.json").read_text())
    assert list(table["rows"]) == ["model.se.alpha=0.3", "model.se.alpha=0.9"]
    cfg = (out / "model.se.alpha-0.9" / "seed1" / "config.yaml").read_text()
    assert "alpha: 0.9" in cfg
    assert sorted(p.name for p in out.glob("*.png")) == ["sweep_all_mAP.png", "sweep_all_rank1.png"]


@pytest.mark.parametrize(
    "script,args,message",
    [
        ("ablate.py", ["--seeds", "0"], "--seeds must be at least 1"),
        ("ablate.py", ["--rows", "SE sideways"], "unknown Table 1 row"),
        ("sweep.py", ["model.se.alpha"], "key=v1,v2"),
        ("sweep.py", ["model.se.alpha=0.1,0.2", "--reference", "0.5"], "not one of the values"),
    ],
)
def test_user_errors_exit_2_with_one_line(script, args, message):
    proc = run(script, *args, ok=False)
    assert proc.returncode == 2
    # (library import warnings may precede it; the command itself writes one line, no traceback)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
