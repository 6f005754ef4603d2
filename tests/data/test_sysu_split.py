"""SYSU-MM01 query/gallery split against the community loops: single-shot, multi-shot and
the official ``rand_perm_cam.mat`` permutations."""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from csetgraph.data import sysu_mm01
from csetgraph.data.records import DatasetLayoutError
from csetgraph.data.synthetic import generate_sysu_mm01

CAMERAS = {"all": ["cam1", "cam2", "cam4", "cam5"], "indoor": ["cam1", "cam2"]}


@pytest.fixture(scope="module")
def sysu12(tmp_path_factory):
    """A tiny tree with 12 images per camera, enough for 10-shot galleries."""
    return generate_sysu_mm01(
        tmp_path_factory.mktemp("sysu12"),
        num_train_ids=1,
        num_val_ids=1,
        num_test_ids=3,
        images_per_camera=12,
        height=16,
        width=8,
        seed=4,
        progress=False,
    )


def _ids(root) -> list[str]:
    with open(os.path.join(root, "exp/test_id.txt")) as file:
        ids = file.read().splitlines()
    return [f"{int(y):04d}" for y in ids[0].split(",")]


def _reference_query(root):
    files = []
    for pid in sorted(_ids(root)):
        for cam in ["cam3", "cam6"]:
            img_dir = os.path.join(root, cam, pid)
            if os.path.isdir(img_dir):
                files.extend(sorted(img_dir + "/" + i for i in os.listdir(img_dir)))
    return files


def _reference_gallery(root, mode, trial, shots=1):
    """The community's process_gallery_sysu with the global random.seed(trial) (multi-shot:
    random.sample of ``shots`` files instead of random.choice)."""
    state = random.getstate()
    try:
        random.seed(trial)
        files = []
        for pid in sorted(_ids(root)):
            for cam in CAMERAS[mode]:
                img_dir = os.path.join(root, cam, pid)
                if os.path.isdir(img_dir):
                    new_files = sorted(img_dir + "/" + i for i in os.listdir(img_dir))
                    if shots == 1:
                        files.append(random.choice(new_files))
                    else:
                        files.extend(random.sample(new_files, shots))
        return files
    finally:
        random.setstate(state)


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_single_shot_gallery_matches_the_community_loop(sysu_root, mode):
    draws = []
    for trial in range(10):
        query, gallery = sysu_mm01.test_split(sysu_root, mode, trial)
        assert [r.path for r in query] == _reference_query(str(sysu_root))
        assert [r.path for r in gallery] == _reference_gallery(str(sysu_root), mode, trial)
        assert sysu_mm01.test_split(sysu_root, mode, trial)[1] == gallery  # same trial, same files
        draws.append(tuple(r.path for r in gallery))
    assert len(set(draws)) > 5  # 3 images per camera: trials may collide, but rarely


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_multi_shot_gallery_is_seeded_per_trial(sysu12, mode):
    draws = []
    for trial in range(3):
        _, gallery = sysu_mm01.test_split(sysu12, mode, trial, shots=10)
        assert [r.path for r in gallery] == _reference_gallery(str(sysu12), mode, trial, 10)
        assert len(gallery) == 3 * len(CAMERAS[mode]) * 10
        per_group = {}
        for r in gallery:
            per_group.setdefault((r.pid, r.camid), []).append(r.path)
        assert all(len(set(v)) == 10 for v in per_group.values())  # without replacement
        assert sysu_mm01.test_split(sysu12, mode, trial, shots=10)[1] == gallery
        draws.append(tuple(r.path for r in gallery))
    assert len(set(draws)) == 3


def _write_perm(path, root, trials=10, orientation=(6, 1), seed=0):
    """A synthetic rand_perm_cam.mat: a 6-camera cell of per-identity cells holding a
    (trials x n_images) matrix of 1-based permutations (empty for a missing camera)."""
    rng = np.random.default_rng(seed)
    num_ids = max(int(x) for x in _ids(root)) + 2  # the real file covers every pid
    cams = np.empty(orientation, dtype=object)
    for c in range(6):
        ids = np.empty((num_ids, 1), dtype=object)
        for pid in range(1, num_ids + 1):
            folder = root / f"cam{c + 1}" / f"{pid:04d}"
            n = len(os.listdir(folder)) if folder.is_dir() else 0
            rows = [rng.permutation(n) + 1 for _ in range(trials)] if n else []
            ids[pid - 1, 0] = np.array(rows, dtype=np.float64).reshape(len(rows), n)
        cams.flat[c] = ids
    savemat(str(path), {"rand_perm_cam": cams})


def _reference_official(perm, cams, ids, trial, shots):
    """The community's get_gallery_names over a loadmat'ed rand_perm_cam."""
    names = []
    for cam in cams:
        cam_perm = perm[cam - 1][0].squeeze()
        for i in ids:
            instance_id = cam_perm[i - 1][trial][:shots]
            names.extend(f"cam{cam}/{i:04d}/{int(ins):04d}" for ins in instance_id.tolist())
    return names


@pytest.mark.parametrize("shots", [1, 10])
def test_official_gallery_follows_rand_perm_cam(sysu12, tmp_path, shots):
    root = tmp_path / "sysu"
    shutil.copytree(sysu12, root)
    with pytest.raises(DatasetLayoutError, match=r"rand_perm_cam\.mat"):
        sysu_mm01.test_split(root, "all", 0, gallery="official")
    _write_perm(root / "exp" / "rand_perm_cam.mat", root)
    perm = loadmat(str(root / "exp" / "rand_perm_cam.mat"))["rand_perm_cam"]
    ids = sorted(int(x) for x in _ids(root))
    draws = []
    for mode, cams in (("all", [1, 2, 4, 5]), ("indoor", [1, 2])):
        for trial in range(3):
            _, gallery = sysu_mm01.test_split(root, mode, trial, shots=shots, gallery="official")
            names = sorted(
                os.path.splitext(os.path.relpath(r.path, root))[0].replace(os.sep, "/")
                for r in gallery
            )
            assert names == sorted(_reference_official(perm, cams, ids, trial, shots))
            assert {(r.pid, r.camid, r.modality) for r in gallery} == {
                (p, c, "vis") for p in ids for c in cams
            }
            draws.append(tuple(names))
    assert len(set(draws)) == len(draws)
    # The loaded permutations can be passed in once for many trials.
    loaded = sysu_mm01.load_rand_perm(root / "exp" / "rand_perm_cam.mat")
    assert sysu_mm01.test_split(
        root, "all", 2, shots, gallery="official", perm=loaded
    ) == sysu_mm01.test_split(root, "all", 2, shots, gallery="official")


def test_official_file_in_either_orientation_and_bad_files(sysu12, tmp_path):
    root = tmp_path / "sysu"
    shutil.copytree(sysu12, root)
    _write_perm(root / "rand_perm_cam.mat", root, trials=2, orientation=(1, 6))
    assert sysu_mm01.official_perm_path(root) == root / "rand_perm_cam.mat"
    perm = loadmat(str(root / "rand_perm_cam.mat"))["rand_perm_cam"].T  # as (6, 1)
    ids = sorted(int(x) for x in _ids(root))
    _, gallery = sysu_mm01.test_split(root, "indoor", 1, gallery="official")
    names = [os.path.splitext(os.path.relpath(r.path, root))[0] for r in gallery]
    assert sorted(names) == sorted(_reference_official(perm, [1, 2], ids, 1, 1))
    with pytest.raises(ValueError, match="2 trials; trial 2"):
        sysu_mm01.test_split(root, "indoor", 2, gallery="official")
    savemat(str(root / "exp" / "rand_perm_cam.mat"), {"something_else": np.zeros(3)})
    with pytest.raises(DatasetLayoutError, match="not the official"):
        sysu_mm01.test_split(root, "all", 0, gallery="official")


def test_bad_arguments(sysu_root):
    with pytest.raises(ValueError, match="shots"):
        sysu_mm01.test_split(sysu_root, "all", 0, shots=0)
    with pytest.raises(ValueError, match="gallery must be"):
        sysu_mm01.test_split(sysu_root, "all", 0, gallery="fixed")
    with pytest.raises(ValueError, match="mode"):
        sysu_mm01.test_split(sysu_root, "outdoor", 0)
