"""LLCM reader on a generated tree: query order and gallery draw against DEEN's loops."""

from __future__ import annotations

import itertools
import os
import random
import shutil

import pytest

from csetgraph.config import DataConfig
from csetgraph.data import llcm
from csetgraph.data.build import build_train_data
from csetgraph.data.records import DatasetLayoutError

VIS_CAMS = [f"test_vis/cam{c}" for c in range(1, 10)]
NIR_CAMS = [f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)]


def _reference_ids(root) -> list[str]:
    with open(os.path.join(root, "idx/test_id.txt")) as f:
        ids = f.read().splitlines()
    return [f"{int(y):04d}" for y in ids[0].split(",")]


def _reference_query(root, cameras):
    """DEEN's process_query_llcm, written out: ids sorted, cameras in order, files sorted."""
    files = []
    for pid in sorted(_reference_ids(root)):
        for cam in cameras:
            img_dir = os.path.join(root, cam, pid)
            if os.path.isdir(img_dir):
                files.extend(sorted(img_dir + "/" + i for i in os.listdir(img_dir)))
    return files


def _reference_gallery(root, cameras, trial):
    """DEEN's process_gallery_llcm: the global random.seed(trial), one choice per id/camera."""
    state = random.getstate()
    try:
        random.seed(trial)
        files = []
        for pid in sorted(_reference_ids(root)):
            for cam in cameras:
                img_dir = os.path.join(root, cam, pid)
                if os.path.isdir(img_dir):
                    new_files = sorted(img_dir + "/" + i for i in os.listdir(img_dir))
                    files.append(random.choice(new_files))
        return files
    finally:
        random.setstate(state)


def test_layout_has_missing_cameras_and_no_nir_camera_3(llcm_root):
    assert not (llcm_root / "test_nir" / "cam3").exists()
    per_id = {}
    for rec in llcm.test_records(llcm_root, "vis") + llcm.test_records(llcm_root, "ir"):
        per_id.setdefault((rec.pid, rec.modality), set()).add(rec.camid)
    # Every identity misses some cameras, and has at least one image of both modalities.
    assert all(len(cams) < 8 for cams in per_id.values())
    test_ids = llcm.read_test_ids(llcm_root)
    assert {p for p, _ in per_id} == set(test_ids)
    assert len(per_id) == 2 * len(test_ids)


def test_query_order_and_labels_match_the_reference_code(llcm_root):
    for modality, cams in (("vis", VIS_CAMS), ("ir", NIR_CAMS)):
        records = llcm.test_records(llcm_root, modality)
        ref = _reference_query(str(llcm_root), cams)
        assert [r.path for r in records] == ref
        # The reference parses camera and pid from the path: .../cam{c}/{pid:04d}/...
        assert [r.camid for r in records] == [int(p.split("cam")[1][0]) for p in ref]
        assert [r.pid for r in records] == [int(p.split("cam")[1][2:6]) for p in ref]
        assert {r.modality for r in records} == {modality}


@pytest.mark.parametrize("query_modality", ["ir", "vis"])
def test_gallery_draw_matches_the_reference_and_depends_on_the_trial(llcm_root, query_modality):
    gallery_cams = VIS_CAMS if query_modality == "ir" else NIR_CAMS
    draws = []
    for trial in range(4):
        query, gallery = llcm.test_split(llcm_root, query_modality, trial)
        assert [r.path for r in gallery] == _reference_gallery(str(llcm_root), gallery_cams, trial)
        assert {r.modality for r in query} == {query_modality}
        assert {r.modality for r in gallery} == {"vis" if query_modality == "ir" else "ir"}
        # One image per (id, camera) present, in (id, camera) order.
        keys = [(r.pid, r.camid) for r in gallery]
        assert keys == sorted(set(keys))
        # Same files for the same trial.
        assert llcm.test_split(llcm_root, query_modality, trial)[1] == gallery
        draws.append(tuple(r.path for r in gallery))
    assert len(set(draws)) == len(draws)  # different across trials


def test_sampling_leaves_the_global_random_state_alone(llcm_root):
    random.seed(123)
    expected = random.random()
    random.seed(123)
    llcm.test_split(llcm_root, "ir", 5)
    assert random.random() == expected


def test_train_records_and_held_out_validation_ids(llcm_root):
    all_records = llcm.train_records(llcm_root)
    lines = (llcm_root / "idx" / "train_vis.txt").read_text().splitlines()
    vis = [r for r in all_records if r.modality == "vis"]
    assert [(r.path, r.pid) for r in vis] == [
        (str(llcm_root / s.split(" ")[0]), int(s.split(" ")[1])) for s in lines
    ]
    assert [r.camid for r in vis] == [int(s.split("cam")[1].split("/")[0]) for s in lines]
    ids = sorted({r.pid for r in all_records})
    held = llcm.val_ids(llcm_root)
    assert held == sorted(random.Random(0).sample(ids, round(0.2 * len(ids))))
    assert {r.pid for r in llcm.train_records(llcm_root, "train")} == set(ids) - set(held)
    q, g = llcm.test_split(llcm_root, "ir", 0, split="val")
    assert {r.pid for r in q} == {r.pid for r in g} == set(held)
    assert not set(held) & set(llcm.read_test_ids(llcm_root))
    data = build_train_data(DataConfig(dataset="llcm", root=str(llcm_root)))
    assert data.num_classes == len(ids)


def _reference_sample_gallery(records, trial):
    """One random.choice per (pid, camera) run of records, with the global random.seed(trial),
    as DEEN's process_gallery_llcm draws per id and camera folder."""
    state = random.getstate()
    try:
        random.seed(trial)
        return [
            random.choice(list(group))
            for _, group in itertools.groupby(records, key=lambda r: (r.pid, r.camid))
        ]
    finally:
        random.setstate(state)


def test_sample_gallery_is_one_choice_per_group():
    from csetgraph.data.records import Record

    # Groups of 1 to 5 images, so a draw that ignored the group boundaries would show.
    sizes = {(1, 1): 3, (1, 4): 1, (2, 2): 5, (2, 9): 2, (5, 1): 4}
    records = [
        Record(f"{p}_{c}_{n}", p, c, "vis") for (p, c), size in sizes.items() for n in range(size)
    ]
    draws = set()
    for trial in range(6):
        gallery = llcm.sample_gallery(records, trial)
        assert gallery == _reference_sample_gallery(records, trial)
        assert [(r.pid, r.camid) for r in gallery] == list(sizes)
        draws.add(tuple(r.path for r in gallery))
    assert len(draws) > 1


def test_bad_input_gets_clear_errors(tmp_path, llcm_root):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        llcm.train_records(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(llcm_root, broken)
    (broken / "idx" / "train_nir.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"train_nir\.txt"):
        llcm.train_records(broken)
    (broken / "idx" / "test_id.txt").write_text("1;2\n")
    with pytest.raises(DatasetLayoutError, match="comma-separated integers"):
        llcm.test_split(broken, "ir", 0)
    (broken / "idx" / "test_id.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"test_id\.txt"):
        llcm.test_split(broken, "ir", 0)
    (broken / "idx" / "test_id.txt").write_text("9999\n")
    with pytest.raises(DatasetLayoutError, match="no ir images"):
        llcm.test_split(broken, "ir", 0)
    shutil.rmtree(broken / "test_nir")
    with pytest.raises(DatasetLayoutError, match="missing test_nir"):
        llcm.test_split(broken, "ir", 0)
    with pytest.raises(ValueError, match="'vis' or 'ir'"):
        llcm.test_split(llcm_root, "nir", 0)
