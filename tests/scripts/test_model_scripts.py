"""scripts/ablate.py and scripts/complexity.py end to end on tiny settings."""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csetgraph.commands import complexity
from csetgraph.commands.complexity import format_table, time_models
from csetgraph.config import load_config
from csetgraph.errors import ConfigError
from csetgraph.models import build_model
from csetgraph.models.ablation import TABLE1, ablation_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "model.se.layers=[0]"]
TINY += ["model.ca.heads=2", "model.mhga.heads=2", "model.se.ratio=0.5"]  # 2 patches: swap 1
TINY += ["data.height=32", "data.width=16", "model.pretrained="]


def run(script, *args):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_table1_rows_set_exactly_their_switches():
    base = load_config(None, ["model.se.layers=[1]"])
    seen = set()
    for name, se, ca, mhga in TABLE1:
        cfg = ablation_config(base, name)
        assert (cfg.model.se.direction, cfg.model.ca.enabled, cfg.model.mhga.enabled) == (
            se,
            ca,
            mhga,
        )
        assert cfg.model.se.layers == [1] and cfg.train == base.train
        seen.add((se, ca, mhga))
    assert len(seen) == 6 and ("none", False, False) in seen
    with pytest.raises(ValueError, match="unknown Table 1 row"):
        ablation_config(base, "SE sideways")


def test_complexity_lists_every_configuration_with_its_parameters_and_ratio():
    out = run("complexity.py", "--rounds", "2", "--batch", "2", "--num-classes", "10", *TINY)
    rows = {line[:22].strip(): line[22:].split() for line in out.splitlines()[2:]}
    assert list(rows) == [name for name, *_ in TABLE1]
    # Parameters: the models built here, counted here.
    base = load_config(None, TINY)
    for name, values in rows.items():
        model = build_model(ablation_config(base, name).model, 10, (32, 16))
        assert float(values[0]) == pytest.approx(n_params(model) / 1e6, abs=5e-4)
    # The ratio column is each row's time over the baseline's (to the printed rounding).
    base_ms = float(rows["baseline"][1])
    for values in rows.values():
        ms, ratio = float(values[1]), float(values[2])
        assert ms > 0
        assert ratio == pytest.approx(ms / base_ms, abs=0.006 + 0.0006 * ms / base_ms**2)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_time_models_reports_times_measured_by_a_clock():
    """Callables of known duration (sleeps) are timed as such, and interleaved."""
    calls = []
    durations = {"short": 0.02, "long": 0.06}

    def sleeper(name):
        def run():
            calls.append(name)
            time.sleep(durations[name])

        return run

    times = time_models({n: sleeper(n) for n in durations}, rounds=3)
    assert calls == ["short", "long"] * 4  # one warm-up each, then rounds in turn
    for name, t in times.items():
        assert len(t) == 3
        assert durations[name] <= statistics.median(t) < durations[name] + 0.015
    table = format_table(
        {"short": 1.0, "long": 2.0},
        {n: statistics.median(t) * 1e3 for n, t in times.items()},
        baseline="short",
    )
    ratio = float(table.splitlines()[2].split()[-1])
    assert ratio == pytest.approx(
        statistics.median(times["long"]) / statistics.median(times["short"]), abs=0.006
    )
    assert 2.3 < ratio < 3.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "0"], "--batch 0 is not allowed: give an integer >= 1"),
        (["--rounds", "-1"], "--rounds -1 is not allowed"),
        ([*TINY, "model.se.ratio=0.01"], "model.se.ratio=0.01 exchanges floor"),
        (
            ["data.height=30", *TINY[:-3], "model.pretrained="],
            "data.height=30 does not fit the patch grid",
        ),
    ],
)
def test_complexity_user_errors_exit_2_with_one_line(args, message, capsys):
    assert complexity.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("csetgraph complexity: error: ")
    assert message in err[0]
    with pytest.raises(ConfigError):
        complexity.main([*args, "--debug"])


@pytest.mark.slow
def test_ablate_writes_markdown_and_json(sysu_root, tmp_path):
    out = run(
        "ablate.py",
        "--no-progress",
        "--rows",
        "baseline",
        "SE both + CA + MHGA",
        "--",
        *TINY,
        f"data.root={sysu_root}",
        "data.synthetic.enabled=false",
        "data.num_ids_per_batch=2",
        "data.num_instances=2",
        "data.num_workers=0",
        "train.epochs=1",
        "train.max_steps_per_epoch=1",
        f"train.output_dir={tmp_path}",
        "eval.trials=1",
        "eval.modes=[all]",
    )
    table = (tmp_path / "ablation" / "table.md").read_text()
    assert "| baseline |" in table and "| SE both + CA + MHGA |" in table
    data = json.loads((tmp_path / "ablation" / "table.json").read_text())
    assert set(data["rows"]) == {"baseline", "SE both + CA + MHGA"}
    assert "all/rank1" in out
