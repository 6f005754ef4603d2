"""scripts/ablate.py and scripts/complexity.py end to end on tiny settings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from csetgraph.config import load_config
from csetgraph.models.ablation import TABLE1, ablation_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "model.se.layers=[0]"]
TINY += ["model.ca.heads=2", "model.mhga.heads=2", "data.height=32", "data.width=16"]


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


def test_complexity_lists_every_configuration_with_growing_parameters():
    out = run("complexity.py", "--rounds", "1", "--batch", "2", "--num-classes", "10", *TINY)
    rows = {line[:22].strip(): line[22:].split() for line in out.splitlines()[2:]}
    assert list(rows) == [name for name, *_ in TABLE1]
    params = [float(v[0]) for v in rows.values()]
    assert params[0] < params[1] == params[2] == params[3] < params[4] < params[5]
    assert float(rows["baseline"][2]) == 1.0


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
