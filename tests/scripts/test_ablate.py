"""Multi-seed Table 1 and sweeps: the statistics against scipy, the scripts end to end."""

import functools
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from csetgraph.config import load_config
from csetgraph.errors import EXIT_USER_ERROR, ConfigError
from csetgraph.experiments import (
    draw_config,
    health_cells,
    health_markdown,
    parse_sweep,
    run_seeds,
    summarise,
    summarise_draws,
    t_interval,
)

ROOT = Path(__file__).resolve().parents[2]
#: On top of the suite's tiny config: one step per run and one search mode, so a table of
#: 2 rows (or values) x 2 seeds trains quickly.
ONE_STEP = ("train.max_steps_per_epoch=1", "eval.modes=[all]")
ROWS = ["baseline", "SE both + CA + MHGA"]


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


@functools.cache
def script_module(script: str):
    """``scripts/<script>`` loaded as a module, to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(
        script.removesuffix(".py"), ROOT / "scripts" / script
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_summarise_draws_takes_the_draw_as_the_unit():
    # Hand-worked, three draws of two seeds: each draw's paired difference is the mean over
    # its seeds (0.2, 0.0, 0.15), and the interval is taken over those three numbers.
    def draw(base, row):
        runs = {"baseline": dict(enumerate(base)), "SE both": dict(enumerate(row))}
        return summarise({r: {s: {"all/rank1": v} for s, v in d.items()} for r, d in runs.items()},
                         "baseline")  # fmt: skip

    per_draw = {0: draw([0.2, 0.4], [0.3, 0.7]), 1: draw([0.5, 0.5], [0.4, 0.6]),
                2: draw([0.1, 0.3], [0.2, 0.5])}  # fmt: skip
    out = summarise_draws(per_draw, "baseline")["SE both"]["all/rank1"]
    assert out["n"] == 3 and out["values"] == pytest.approx([0.5, 0.5, 0.35])
    assert out["mean"] == pytest.approx(0.45) and out["diff"] == pytest.approx(0.35 / 3)
    assert out["std"] == pytest.approx(np.std([0.5, 0.5, 0.35], ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=0.35 / 3, scale=stats.sem([0.2, 0.0, 0.15]))
    assert (out["diff_low"], out["diff_high"]) == pytest.approx((lo, hi))
    per_draw[2].pop("SE both")
    with pytest.raises(ConfigError, match="draw 2 holds rows"):
        summarise_draws(per_draw, "baseline")


def test_each_draw_gets_its_own_data_folder():
    cfg = load_config(None, ["data.root=/d/syn", "data.synthetic.seed=4"])
    own, other = draw_config(cfg, 4), draw_config(cfg, 6)
    assert (own.data.root, own.data.synthetic.seed) == ("/d/syn", 4)
    assert (other.data.root, other.data.synthetic.seed) == ("/d/syn-draw6", 6)
    assert (cfg.data.root, cfg.data.synthetic.seed) == ("/d/syn", 4)  # the input is untouched
    with pytest.raises(ConfigError, match="needs the synthetic data set"):
        draw_config(load_config(None, ["data.synthetic.enabled=false"]), 1)


def test_parse_sweep():
    assert parse_sweep("model.se.alpha=0.1, 0.5,0.9") == ("model.se.alpha", ["0.1", "0.5", "0.9"])
    for bad in ("model.se.alpha", "model.se.alpha=", "=0.1"):
        with pytest.raises(ConfigError, match="key=v1,v2"):
            parse_sweep(bad)


def _metrics(run_dir: Path) -> dict[str, float]:
    """A run's own metrics.json, read independently of the table code."""
    res = json.loads((run_dir / "metrics.json").read_text())
    res.pop("mechanisms")  # the health section, not a result
    return {f"{s}/{m}": v for s, r in res.items() for m, v in r["mean"].items()}


@pytest.fixture(scope="module")
def ablation(tiny_config, tmp_path_factory):
    """One ``ablate.py`` process (2 rows x 2 seeds) whose output several tests read.

    The rows are separate words; ``--rows`` swallows the first overrides after them (words
    with "=" are overrides, never rows) and the rest follow ``--``.
    Returns ``(ablation folder, stdout, the overrides in the order given)``.
    """
    out_dir = tmp_path_factory.mktemp("ablate")
    overrides = tiny_config(out_dir, "ablate", *ONE_STEP)
    proc = run(
        "ablate.py", "--no-progress", "--seeds", "2", "--rows", *ROWS,
        *overrides[:3], "--", *overrides[3:],
    )  # fmt: skip
    return out_dir / "ablation", proc.stdout, overrides


@pytest.mark.slow
def test_ablate_two_seeds_writes_intervals(ablation):
    out, _, overrides = ablation
    rows = ROWS
    table = json.loads((out / "table.json").read_text())
    assert table["seeds"] == [0, 1] and list(table["rows"]) == rows
    # the words --rows swallowed and those after "--" are all overrides, in order
    assert table["overrides"] == overrides
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
    # the health table: every row, each verdict counted over the two seeds
    assert set(table["health"]) == set(rows)
    assert table["health"]["baseline"]["triplet"].split(";")[0].endswith("/2")
    assert "SE" not in table["health"]["baseline"] and "SE" in table["health"][rows[1]]
    assert "Mechanism health" in md


@pytest.mark.slow
def test_ablate_writes_markdown_and_json(ablation):
    out, stdout, _ = ablation
    table = (out / "table.md").read_text()
    assert "| baseline |" in table and "| SE both + CA + MHGA |" in table
    data = json.loads((out / "table.json").read_text())
    assert set(data["rows"]) == {"baseline", "SE both + CA + MHGA"}
    assert "all/rank1" in stdout


def test_health_cells_count_verdicts_and_span_statistics():
    def section(se, same0, same1, cos_i2v, term, active):
        return {
            "verdicts": [
                {"mechanism": "SE", "level": se, "findings": []},
                {"mechanism": "triplet", "level": "alive", "findings": []},
            ],
            "last": {
                "se/block0/i2v/same_position": same0,
                "se/block1/v2i/same_position": same1,
                "se/i2v/class_cosine": cos_i2v,
                "se/v2i/class_cosine": 0.95,
                "triplet/loss": term,
                "triplet/active": active,
            },
        }

    cells = health_cells(
        [section("weak", 0.25, 0.40, 0.981, 0.26, 0.99), section("alive", 0.3, 0.1, 0.97, 0.28, 1)]
    )
    assert cells == {
        "SE": "alive 1/2, weak 1/2; same-position ≤ 0.400; cos i2v 0.970–0.981; cos v2i 0.950",
        "triplet": "alive 2/2; term 0.260–0.280; active 0.990–1.000",
    }
    table = health_markdown({"baseline": {"triplet": "alive 1/1"}, "SE both": cells})
    lines = table.splitlines()
    assert lines[2] == "| baseline | — | — | alive 1/1 | — | — |"
    assert lines[3].startswith("| SE both | alive 1/2, weak 1/2;") and lines[3].count(" — ") == 3


@pytest.mark.slow
def test_reuse_reads_finished_runs_and_refuses_another_config(ablation, tmp_path, capsys):
    out, _, overrides = ablation
    copy = tmp_path / "ablation"
    shutil.copytree(out, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("metrics.json")}
    assert len(before) == 4
    args = ["--no-progress", "--seeds", "2", "--rows", *ROWS, "--reuse", "--output-dir", str(copy)]
    assert script_module("ablate.py").main([*args, *overrides]) == 0
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("metrics.json")} == before  # no training
    old, new = (json.loads((d / "table.json").read_text())["rows"] for d in (out, copy))
    assert new == old
    # a finished run of another config is named, not silently read
    capsys.readouterr()
    assert script_module("ablate.py").main([*args, *overrides, "model.se.alpha=0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run of another config" in err and "model.se.alpha" in err


@pytest.mark.slow
def test_a_component_row_trains_the_model_its_switches_name(tiny_config, tmp_path):
    """``--rows "SE both + MHGA"`` trains what the switches set by hand train (full CSET with
    ``model.ca.enabled=false``), and its health table has SE and MHGA but no CA."""
    overrides = tiny_config(tmp_path, "component", *ONE_STEP)
    args = ["--no-progress", "--seeds", "1", "--split", "val", "--rows", "SE both + MHGA"]
    out = tmp_path / "abl"
    assert script_module("ablate.py").main([*args, "--output-dir", str(out), "--", *overrides]) == 0
    by_hand = load_config(None, [*overrides, "model.ca.enabled=false"])
    assert by_hand.model.se.direction == "both" and by_hand.model.mhga.enabled
    ref = run_seeds({"hand": by_hand}, [0], tmp_path / "hand", split="val", progress=False)
    table = json.loads((out / "table.json").read_text())
    got = table["rows"]["SE both + MHGA"]
    for metric, value in ref["hand"][0].items():
        assert got[metric]["mean"] == pytest.approx(value)
    health = table["health"]["SE both + MHGA"]
    assert "SE" in health and "MHGA" in health and "CA" not in health


@pytest.mark.slow
def test_ablate_on_two_draws_reports_the_draw_as_the_unit(tiny_config, tmp_path):
    size = [f"data.synthetic.{k}={v}" for k, v in (("num_train_ids", 6), ("num_val_ids", 2),
            ("num_test_ids", 4), ("height", 32), ("width", 16))]  # fmt: skip
    overrides = tiny_config(tmp_path, "draws", *ONE_STEP, *size)
    overrides += [f"data.root={tmp_path / 'syn'}", "data.synthetic.enabled=true"]
    rows = ["baseline", "SE both"]
    run("ablate.py", "--no-progress", "--draws", "2", "--seeds", "1", "--rows", "SE both",
        "--output-dir", str(tmp_path / "abl"), "--", *overrides)  # fmt: skip
    out = tmp_path / "abl"
    runs = {(d, r): out / f"draw{d}" / r.replace(" ", "_") / "seed0" for d in (0, 1) for r in rows}
    saved = {d: load_config(runs[d, "baseline"] / "config.yaml").data for d in (0, 1)}
    assert (saved[0].root, saved[0].synthetic.seed) == (str(tmp_path / "syn"), 0)
    assert (saved[1].root, saved[1].synthetic.seed) == (str(tmp_path / "syn-draw1"), 1)
    prints = [(runs[d, "baseline"] / "fingerprint.json").read_text() for d in (0, 1)]
    assert prints[0] != prints[1]  # two draws, two data sets
    table = json.loads((out / "table.json").read_text())
    assert table["draws"] == [0, 1] and set(table["rows"]) == set(rows)
    for metric in ("all/rank1", "all/mAP"):
        diffs = [_metrics(runs[d, "SE both"])[metric] - _metrics(runs[d, "baseline"])[metric]
                 for d in (0, 1)]  # fmt: skip
        got = table["rows"]["SE both"][metric]
        assert got["n"] == 2 and got["diff"] == pytest.approx(np.mean(diffs))
        if np.ptp(diffs) > 0:
            lo, hi = stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=stats.sem(diffs))
            assert (got["diff_low"], got["diff_high"]) == pytest.approx((lo, hi))
    assert all((out / f"draw{d}" / "table.md").is_file() for d in (0, 1))
    md = (out / "table.md").read_text()
    assert "t-interval over draws" in md and "every draw and seed" in md


@pytest.mark.slow
def test_sweep_writes_table_and_plots(tiny_config, tmp_path):
    overrides = tiny_config(tmp_path, "sweep", *ONE_STEP)
    run("sweep.py", "model.se.alpha=0.3,0.9", "--seeds", "2", "--no-progress", *overrides)
    out = tmp_path / "sweep_model.se.alpha"
    table = json.loads((out / "table.json").read_text())
    assert list(table["rows"]) == ["model.se.alpha=0.3", "model.se.alpha=0.9"]
    cfg = (out / "model.se.alpha-0.9" / "seed1" / "config.yaml").read_text()
    assert "alpha: 0.9" in cfg
    assert sorted(p.name for p in out.glob("*.png")) == ["sweep_all_mAP.png", "sweep_all_rank1.png"]


USER_ERRORS = [
    ("ablate.py", ["--seeds", "0"], "--seeds must be at least 1"),
    ("ablate.py", ["--rows", "SE sideways"], "unknown Table 1 row 'SE sideways'"),
    # comma-separated rows are split: the unknown one is named alone
    ("ablate.py", ["--rows", "baseline,SE sideways"], "unknown Table 1 row 'SE sideways'"),
    # a word with "=" after --rows is an override, not a row
    (
        "ablate.py",
        ["--rows", "baseline", "model.nonsense=1"],
        "unknown config key 'model.nonsense'",
    ),
    ("ablate.py", ["--reuse", "--split", "val"], "--reuse reads the test results"),
    ("ablate.py", ["--draws", "0"], "--draws must be at least 1"),
    ("ablate.py", ["--draws", "2", "data.synthetic.enabled=false"], "needs the synthetic data"),
    ("sweep.py", ["model.se.alpha"], "key=v1,v2"),
    ("sweep.py", ["model.se.alpha=0.1,0.2", "--reference", "0.5"], "not one of the values"),
]


def test_user_error_list_is_not_empty():
    assert {script for script, *_ in USER_ERRORS} == {"ablate.py", "sweep.py"}


@pytest.mark.parametrize("script,args,message", USER_ERRORS)
def test_user_errors_exit_2_with_one_line(script, args, message, capsys):
    assert script_module(script).main(args) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"{script.removesuffix('.py')}: error: ") and message in lines[0]


def test_the_script_process_exits_2_with_one_line():
    # The scripts as processes (what a user runs): the shim passes the exit status on.
    proc = run("ablate.py", "--seeds", "0", ok=False)
    assert proc.returncode == EXIT_USER_ERROR
    # (library import warnings may precede it; the command itself writes one line, no traceback)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "--seeds must be at least 1" in errors[0]
    assert "Traceback" not in proc.stderr
