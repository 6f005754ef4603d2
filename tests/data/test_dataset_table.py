"""The data-set table: every module answers the same calls, checked against walks of the trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from csetgraph.data import DATASETS, get_dataset
from csetgraph.data.records import DIRECTIONS, MODALITIES
from csetgraph.errors import ConfigError

NAMES = list(DATASETS)


def _walk(root: Path, top: str, pids: set[int]) -> set[str]:
    """Image files under ``root/top*/cam*/<pid:04d>/`` for the given pids."""
    out = set()
    for folder, _, names in os.walk(root):
        parts = Path(folder).relative_to(root).parts
        if parts and parts[0].startswith(top) and parts[-1].isdigit() and int(parts[-1]) in pids:
            out.update(str(Path(folder) / n) for n in names)
    return out


def _test_images(name: str, root: Path, trial: int) -> set[str]:
    """Every test image, found without the readers: the id/idx files and a folder walk."""
    if name == "sysu_mm01":
        ids = {int(x) for x in (root / "exp" / "test_id.txt").read_text().split(",")}
        return _walk(root, "cam", ids)
    if name == "llcm":
        ids = {int(x) for x in (root / "idx" / "test_id.txt").read_text().split(",")}
        return _walk(root, "test_", ids)
    lines = []
    for side in ("visible", "thermal"):
        lines += (root / "idx" / f"test_{side}_{trial}.txt").read_text().split("\n")
    return {str(root / line.split()[0]) for line in lines if line.strip()}


def test_the_table_lists_the_three_data_sets():
    assert NAMES == ["sysu_mm01", "regdb", "llcm"]
    assert {get_dataset(n).PROTOCOL for n in NAMES} == {"sysu", "regdb", "llcm"}
    with pytest.raises(ConfigError, match="one of sysu_mm01, regdb, llcm, got 'market'"):
        get_dataset("market")


@pytest.mark.parametrize("name", NAMES)
def test_every_module_answers_the_same_calls(name, roots):
    ds, root = get_dataset(name), roots[name]
    assert ds.check_root(str(root)) == root
    assert ds.DIRECTIONS and set(ds.DIRECTIONS) <= set(DIRECTIONS)
    assert ds.SPLITS == ("train", "val", "test")
    everything = ds.all_records(root, split="test", trial=2)
    assert set(everything) == set(MODALITIES)
    assert {r.modality for m in MODALITIES for r in everything[m]} == set(MODALITIES)
    assert all(r.modality == m for m in MODALITIES for r in everything[m])
    assert {r.path for m in MODALITIES for r in everything[m]} == _test_images(name, root, 2)
    # The protocol's trials: gallery draws, or RegDB's own split only.
    trials = ds.eval_trials(3, data_trial=2)
    assert trials == ([2] if name == "regdb" else [0, 1, 2])
    for direction in ds.DIRECTIONS:
        q_mod, g_mod = DIRECTIONS[direction]
        for mode in ds.MODES:
            query, gallery = ds.test_split(
                root, split="test", direction=direction, trial=trials[0], mode=mode
            )
            assert {r.modality for r in query} == {q_mod}
            assert {r.modality for r in gallery} == {g_mod}
            assert [r.path for r in query] == [r.path for r in everything[q_mod]]
            assert {r.path for r in gallery} <= {r.path for r in everything[g_mod]}
    assert ds.MODES == (("all", "indoor") if name == "sysu_mm01" else ("all",))
    if name != "sysu_mm01":
        with pytest.raises(ValueError, match="search mode 'all' only"):
            ds.test_split(root, split="test", direction=ds.DIRECTIONS[0], mode="indoor")
    train = ds.train_records(root, split="train+val", trial=2)
    parts = [ds.all_records(root, split=s, trial=2) for s in ("train", "val")]
    assert sorted(r.path for r in train) == sorted(
        r.path for part in parts for m in MODALITIES for r in part[m]
    )


def test_sysu_has_infrared_queries_only(sysu_root):
    with pytest.raises(ValueError, match="infrared queries only"):
        get_dataset("sysu_mm01").test_split(sysu_root, direction="v2i")


def test_llcm_direction_and_query_modality_agree(llcm_root):
    llcm = get_dataset("llcm")
    assert llcm.test_split(llcm_root, direction="v2i", trial=1) == llcm.test_split(
        llcm_root, "vis", 1
    )
    with pytest.raises(ValueError, match="direction must be one of"):
        llcm.test_split(llcm_root, direction="I2V")
