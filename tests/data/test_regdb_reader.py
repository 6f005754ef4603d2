"""RegDB reader on a generated tree: idx format, trials, held-out validation ids, errors."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from csetgraph.config import DataConfig
from csetgraph.data import regdb
from csetgraph.data.build import build_train_data
from csetgraph.data.records import DatasetLayoutError
from csetgraph.data.synthetic import generate_regdb

NUM_TRAIN, NUM_VAL, NUM_TEST, PER_CAM = 8, 2, 5, 3


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory):
    return generate_regdb(
        tmp_path_factory.mktemp("regdb"),
        num_train_ids=NUM_TRAIN,
        num_val_ids=NUM_VAL,
        num_test_ids=NUM_TEST,
        images_per_camera=PER_CAM,
        height=32,
        width=16,
        seed=5,
        progress=False,
    )


def _parse(path: Path) -> list[tuple[str, int]]:
    # The reference code's parser: s.split(' ')[0] and int(s.split(' ')[1]) per line.
    lines = path.read_text().splitlines()
    return [(s.split(" ")[0], int(s.split(" ")[1])) for s in lines]


def test_generated_tree_has_the_real_layout(regdb_root):
    names = sorted(p.name for p in (regdb_root / "idx").iterdir())
    expected = sorted(
        f"{s}_{m}_{t}.txt"
        for s in ("train", "test")
        for m in ("visible", "thermal")
        for t in range(1, 11)
    )
    assert names == expected
    total = NUM_TRAIN + NUM_VAL + NUM_TEST
    for t in range(1, 11):
        train_v = _parse(regdb_root / "idx" / f"train_visible_{t}.txt")
        test_t = _parse(regdb_root / "idx" / f"test_thermal_{t}.txt")
        assert all(rel.startswith("Visible/") for rel, _ in train_v)
        assert all(rel.startswith("Thermal/") for rel, _ in test_t)
        assert all((regdb_root / rel).is_file() for rel, _ in train_v + test_t)
        train_ids, test_ids = {lab for _, lab in train_v}, {lab for _, lab in test_t}
        assert len(train_ids) == NUM_TRAIN + NUM_VAL and len(test_ids) == NUM_TEST
        assert not train_ids & test_ids and len(train_ids | test_ids) == total
        assert len(train_v) == (NUM_TRAIN + NUM_VAL) * PER_CAM
    # Ten different random splits.
    splits = {
        frozenset(lab for _, lab in _parse(regdb_root / "idx" / f"test_visible_{t}.txt"))
        for t in range(1, 11)
    }
    assert len(splits) > 1


def test_records_follow_the_idx_files(regdb_root):
    vis, ir = regdb.test_records(regdb_root, trial=3)
    ref_v = _parse(regdb_root / "idx" / "test_visible_3.txt")
    ref_t = _parse(regdb_root / "idx" / "test_thermal_3.txt")
    assert [(r.path, r.pid) for r in vis] == [(str(regdb_root / p), lab) for p, lab in ref_v]
    assert [(r.path, r.pid) for r in ir] == [(str(regdb_root / p), lab) for p, lab in ref_t]
    assert {(r.modality, r.camid) for r in vis} == {("vis", 1)}
    assert {(r.modality, r.camid) for r in ir} == {("ir", 2)}
    q, g = regdb.test_split(regdb_root, trial=3, direction="i2v")
    assert q == ir and g == vis
    train = regdb.train_records(regdb_root, trial=3)
    ref = _parse(regdb_root / "idx" / "train_visible_3.txt") + _parse(
        regdb_root / "idx" / "train_thermal_3.txt"
    )
    assert [(r.path, r.pid) for r in train] == [(str(regdb_root / p), lab) for p, lab in ref]


def test_validation_ids_are_a_seeded_held_out_part_of_the_training_ids(regdb_root):
    for trial in (1, 2):
        all_ids = sorted({r.pid for r in regdb.train_records(regdb_root, trial)})
        held = regdb.val_ids(regdb_root, trial)
        # The specification: round(20%) of the sorted training ids, random.Random(trial).sample.
        assert held == sorted(random.Random(trial).sample(all_ids, round(0.2 * len(all_ids))))
        train = {r.pid for r in regdb.train_records(regdb_root, trial, "train")}
        val = {r.pid for r in regdb.train_records(regdb_root, trial, "val")}
        assert val == set(held) and train == set(all_ids) - set(held)
        vis, ir = regdb.test_records(regdb_root, trial, split="val")
        assert {r.pid for r in vis} == {r.pid for r in ir} == set(held)
        assert len(vis) == len(held) * PER_CAM
        test_ids = {r.pid for r in regdb.test_records(regdb_root, trial)[0]}
        assert not test_ids & set(held)
    assert regdb.val_ids(regdb_root, 1) == regdb.val_ids(regdb_root, 1)


def test_hold_out_ids_bounds():
    assert regdb.hold_out_ids([3, 1, 2, 3], 0.2, seed=0) in ([1], [2], [3])
    assert len(regdb.hold_out_ids(range(100), 0.2)) == 20
    with pytest.raises(ValueError, match="at least two"):
        regdb.hold_out_ids([4, 4], 0.2)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        regdb.hold_out_ids([1, 2], 1.0)


def test_training_data_adapter_reads_the_configured_trial(regdb_root):
    data = build_train_data(DataConfig(dataset="regdb", root=str(regdb_root), trial=4))
    assert data.num_classes == NUM_TRAIN + NUM_VAL
    assert len(data.vis) == len(data.ir) == (NUM_TRAIN + NUM_VAL) * PER_CAM


def test_bad_input_gets_clear_errors(tmp_path, regdb_root):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        regdb.train_records(tmp_path / "nothing", 1)
    broken = tmp_path / "broken"
    shutil.copytree(regdb_root, broken)
    (broken / "idx" / "test_thermal_2.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"test_thermal_2\.txt"):
        regdb.test_records(broken, 2)
    with pytest.raises(DatasetLayoutError, match=r"train_visible_11\.txt.*trials 1-10"):
        regdb.train_records(broken, 11)
    (broken / "idx" / "train_visible_1.txt").write_text("Visible/1/0001.jpg 0\nno_label_here\n")
    with pytest.raises(DatasetLayoutError, match="line 2"):
        regdb.train_records(broken, 1)
    (broken / "idx" / "train_visible_1.txt").write_text("\n")
    with pytest.raises(DatasetLayoutError, match="empty"):
        regdb.train_records(broken, 1)
    shutil.rmtree(broken / "Thermal")
    with pytest.raises(DatasetLayoutError, match="missing Thermal"):
        regdb.test_records(broken, 1)
    with pytest.raises(ValueError, match="direction"):
        regdb.test_split(regdb_root, 1, direction="t2v")
    with pytest.raises(ValueError, match="training split"):
        regdb.train_records(regdb_root, 1, "test")
