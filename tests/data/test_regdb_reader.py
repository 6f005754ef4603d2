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

# The sizes of the session fixture ``regdb_root`` (tests/conftest.py).
NUM_TRAIN, NUM_VAL, NUM_TEST, PER_CAM = 8, 2, 12, 3


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


def _reference_held_out(root: Path, trial: int) -> list[int]:
    """The specification, from the idx files alone: round(20%) of the trial's distinct
    training labels (visible and thermal lists), sorted, then random.Random(trial).sample."""
    labels = set()
    for name in ("visible", "thermal"):
        labels |= {lab for _, lab in _parse(root / "idx" / f"train_{name}_{trial}.txt")}
    ordered = sorted(labels)
    return sorted(random.Random(trial).sample(ordered, round(0.2 * len(ordered))))


def test_validation_ids_are_a_seeded_held_out_part_of_the_training_ids(regdb_root):
    held_per_trial = {}
    for trial in (1, 2, 3):
        ref = _reference_held_out(regdb_root, trial)
        assert len(ref) == round(0.2 * (NUM_TRAIN + NUM_VAL))
        assert regdb.val_ids(regdb_root, trial) == ref
        lines = _parse(regdb_root / "idx" / f"train_visible_{trial}.txt") + _parse(
            regdb_root / "idx" / f"train_thermal_{trial}.txt"
        )
        # "train" keeps exactly the idx lines whose label is not held out, "val" the others.
        train = regdb.train_records(regdb_root, split="train", trial=trial)
        val = regdb.train_records(regdb_root, split="val", trial=trial)
        expect_train = [(str(regdb_root / p), lab) for p, lab in lines if lab not in ref]
        expect_val = [(str(regdb_root / p), lab) for p, lab in lines if lab in ref]
        assert [(r.path, r.pid) for r in train] == expect_train
        assert [(r.path, r.pid) for r in val] == expect_val
        vis, ir = regdb.test_records(regdb_root, trial, split="val")
        assert [r.path for r in vis + ir] == [path for path, _ in expect_val]
        test_labels = {lab for _, lab in _parse(regdb_root / "idx" / f"test_visible_{trial}.txt")}
        assert not test_labels & set(ref)
        held_per_trial[trial] = tuple(ref)
    # Seeded by the trial: the three trials do not all hold out the same ids.
    assert len(set(held_per_trial.values())) > 1


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
        regdb.train_records(regdb_root, split="test", trial=1)
