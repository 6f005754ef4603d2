"""Table 1's switches and ``csetgraph complexity`` (scripts/complexity.py) on the tiny model.

(``scripts/ablate.py`` end to end is in test_ablate.py.)"""

import importlib.util
import statistics
import time
from pathlib import Path

import pytest

from csetgraph.commands import complexity
from csetgraph.commands.complexity import format_table, time_models
from csetgraph.config import load_config
from csetgraph.errors import ConfigError
from csetgraph.models import build_model
from csetgraph.models.ablation import COMPONENT_ROWS, TABLE1, ablation_config

ROOT = Path(__file__).resolve().parents[2]


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


def test_component_rows_build_models_with_exactly_their_components(tiny_overrides):
    """MHGA alone is the baseline plus MHGA; SE both + MHGA is SE both plus MHGA, and full CSET
    is that plus what CA adds to SE both: modules and parameter counts."""
    assert [name for name, *_ in COMPONENT_ROWS] == ["MHGA alone", "SE both + MHGA"]
    base = load_config(None, tiny_overrides)
    rows = [name for name, *_ in TABLE1 + COMPONENT_ROWS]
    models = {r: build_model(ablation_config(base, r).model, 10, (32, 16)) for r in rows}
    mods = {r: {n.split(".")[0] for n, _ in m.named_modules() if n} for r, m in models.items()}
    size = {r: n_params(m) for r, m in models.items()}
    assert mods["MHGA alone"] == mods["baseline"] | {"mhga"}
    assert mods["SE both + MHGA"] == mods["SE both"] | {"mhga"}
    ca = mods["SE both + CA"] - mods["SE both"]
    assert ca and mods["SE both + CA + MHGA"] == mods["SE both + MHGA"] | ca
    mhga = size["MHGA alone"] - size["baseline"]
    assert mhga > 0 and size["SE both + MHGA"] - size["SE both"] == mhga
    ca_size = size["SE both + CA"] - size["SE both"]
    assert ca_size > 0 and size["SE both + CA + MHGA"] - size["SE both + MHGA"] == ca_size
    for name, se, ca_on, mhga_on in COMPONENT_ROWS:
        cfg = ablation_config(base, name).model
        assert (cfg.se.direction, cfg.ca.enabled, cfg.mhga.enabled) == (se, ca_on, mhga_on)


def test_complexity_lists_every_configuration_with_its_parameters_and_ratio(tiny_overrides, capsys):
    args = ["--rounds", "2", "--batch", "2", "--num-classes", "10", *tiny_overrides]
    assert complexity.main(args) == 0
    out = capsys.readouterr().out
    rows = {line[:22].strip(): line[22:].split() for line in out.splitlines()[2:]}
    assert list(rows) == [name for name, *_ in TABLE1]
    # Parameters: the models built here, counted here.
    base = load_config(None, tiny_overrides)
    for name, values in rows.items():
        model = build_model(ablation_config(base, name).model, 10, (32, 16))
        assert float(values[0]) == pytest.approx(n_params(model) / 1e6, abs=5e-4)
    # The ratio column is each row's time over the baseline's (to the printed rounding).
    base_ms = float(rows["baseline"][1])
    for values in rows.values():
        ms, ratio = float(values[1]), float(values[2])
        assert ms > 0
        assert ratio == pytest.approx(ms / base_ms, abs=0.006 + 0.0006 * ms / base_ms**2)


def test_the_script_is_a_shim_of_the_command():
    spec = importlib.util.spec_from_file_location(
        "complexity_script", ROOT / "scripts/complexity.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is complexity.main


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
    ("args", "with_tiny", "message"),
    [
        (["--batch", "0"], False, "--batch 0 is not allowed: give an integer >= 1"),
        (["--rounds", "-1"], False, "--rounds -1 is not allowed"),
        (["model.se.ratio=0.01"], True, "model.se.ratio=0.01 exchanges floor"),
        (["data.height=30"], True, "data.height=30 does not fit the patch grid"),
    ],
)
def test_complexity_user_errors_exit_2_with_one_line(
    args, with_tiny, message, tiny_overrides, capsys
):
    if with_tiny:  # the tiny model, then the override under test
        args = [*tiny_overrides, *args]
    assert complexity.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("csetgraph complexity: error: ")
    assert message in err[0]
    with pytest.raises(ConfigError):
        complexity.main([*args, "--debug"])
