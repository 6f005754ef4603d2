import shutil

import pytest

from csetgraph.config import DataConfig
from csetgraph.data import sysu_mm01
from csetgraph.data.build import build_train_data
from csetgraph.data.records import CorruptImageError, DatasetLayoutError, load_image, relabel
from csetgraph.data.sysu_mm01 import read_ids, train_records


def test_split_files_are_disjoint_and_cover_all_ids(sysu_root):
    train, val, test = (set(read_ids(sysu_root, s)) for s in ("train", "val", "test"))
    assert len(train) == 6 and len(val) == 2 and len(test) == 4
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(1, 13))


def test_train_records_walk_the_raw_layout(sysu_root):
    recs = train_records(sysu_root, "train+val")
    ids = set(read_ids(sysu_root, "train")) | set(read_ids(sysu_root, "val"))
    assert {r.pid for r in recs} == ids
    # 6 cameras x 3 images per id, and the camera decides the modality.
    assert len(recs) == len(ids) * 6 * 3
    for r in recs:
        assert r.modality == ("ir" if r.camid in (3, 6) else "vis")
        assert f"cam{r.camid}/{r.pid:04d}/" in r.path
    assert {r.pid for r in train_records(sysu_root, "train")} == set(read_ids(sysu_root, "train"))


def test_relabel_is_sorted_and_deterministic(sysu_root):
    recs = train_records(sysu_root)
    relabelled, mapping = relabel(list(reversed(recs)))
    assert list(mapping) == sorted(mapping)
    assert list(mapping.values()) == list(range(len(mapping)))
    assert all(mapping[o.pid] == n.pid for o, n in zip(reversed(recs), relabelled, strict=True))


def test_train_data_splits_modalities(sysu_root):
    data = build_train_data(DataConfig(root=str(sysu_root), train_split="train"))
    assert data.num_classes == 6
    assert {r.modality for r in data.vis} == {"vis"} and {r.modality for r in data.ir} == {"ir"}
    assert {r.pid for r in data.vis} == set(range(6))


def test_query_and_gallery_follow_the_protocol(sysu_root):
    q, g = sysu_mm01.test_split(sysu_root, "all", trial=0)
    test_ids = sorted(read_ids(sysu_root, "test"))
    assert {r.camid for r in q} == {3, 6} and len(q) == 4 * 2 * 3
    assert [(r.pid, r.camid) for r in g] == [(p, c) for p in test_ids for c in (1, 2, 4, 5)]
    _, g_in = sysu_mm01.test_split(sysu_root, "indoor", trial=0)
    assert {r.camid for r in g_in} == {1, 2}


def test_missing_root_and_wrong_layout(tmp_path, sysu_root):
    with pytest.raises(DatasetLayoutError, match=r"does not exist.*data\.root"):
        train_records(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(sysu_root, broken)
    shutil.rmtree(broken / "cam3")
    with pytest.raises(DatasetLayoutError, match="missing cam3"):
        train_records(broken)
    (broken / "cam3").mkdir()
    (broken / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"val_id\.txt"):
        train_records(broken, "train+val")
    (broken / "exp" / "train_id.txt").write_text("1;2;3\n")
    with pytest.raises(DatasetLayoutError, match="comma-separated integers"):
        read_ids(broken, "train")


def test_corrupt_image_is_named_or_skipped(tmp_path, sysu_root):
    root = tmp_path / "corrupt"
    shutil.copytree(sysu_root, root)
    pid = read_ids(root, "train")[0]
    bad = root / "cam1" / f"{pid:04d}" / "0001.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(CorruptImageError, match=r"0001\.jpg.*data\.skip_corrupt"):
        load_image(bad)
    cfg = DataConfig(root=str(root), skip_corrupt=True)
    data = build_train_data(cfg)
    assert str(bad) not in {r.path for r in data.vis}
    assert len(data.vis) == 8 * 4 * 3 - 1


@pytest.mark.parametrize("dataset", ["regdb", "llcm"])
def test_train_split_holds_out_validation_ids_for_every_dataset(tmp_path, dataset):
    from csetgraph.data import llcm, regdb
    from csetgraph.data.build import ensure_dataset

    cfg = DataConfig(dataset=dataset, root=str(tmp_path / dataset))
    cfg.synthetic.num_train_ids, cfg.synthetic.num_val_ids = 8, 2
    cfg.synthetic.num_test_ids, cfg.synthetic.images_per_camera = 4, 2
    cfg.synthetic.height, cfg.synthetic.width = 32, 16
    ensure_dataset(cfg, progress=False)
    everything = build_train_data(cfg)
    cfg.train_split = "train"
    held = build_train_data(cfg)
    val = set(regdb.val_ids(cfg.root, cfg.trial) if dataset == "regdb" else llcm.val_ids(cfg.root))
    assert val and not val & set(held.pid_map)
    assert set(held.pid_map) | val == set(everything.pid_map)
