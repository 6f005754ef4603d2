"""What the readers check when a data set is read (issue 12 item 4, issue 14 item 5).

* id files are read whole (one comma-separated line, or one id per line);
* every image an idx file lists must exist, and all missing ones are counted, the first few
  named;
* images smaller than one patch are counted in a warning.
"""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from PIL import Image

from csetgraph.config import DataConfig
from csetgraph.data import llcm, regdb, sysu_mm01
from csetgraph.data.build import build_train_data
from csetgraph.data.records import read_id_file
from csetgraph.errors import IdFileError


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("3,1,2\n", [3, 1, 2]),  # the data sets' own format
        ("3\n1\n2\n", [3, 1, 2]),  # one per line: all of them, not the first
        ("3, 1,\n\n2,4\n", [3, 1, 2, 4]),  # several lines, blanks and spaces
    ],
)
def test_id_files_are_read_whole(tmp_path, text, ids):
    path = tmp_path / "ids.txt"
    path.write_text(text)
    assert read_id_file(path) == ids


def test_bad_id_files_are_refused_by_name(tmp_path):
    path = tmp_path / "test_id.txt"
    path.write_text("1,2\n3;4\n")
    with pytest.raises(IdFileError, match=r"test_id\.txt' line 2: expected comma-separated"):
        read_id_file(path)
    path.write_text("1,2\n2\n")
    with pytest.raises(IdFileError, match=r"more than once: \[2\]"):
        read_id_file(path)
    path.write_text("\n \n")
    with pytest.raises(IdFileError, match="is empty"):
        read_id_file(path)


def _split_rows(root):
    query, gallery = sysu_mm01.test_split(root, "all", 0)
    return [(os.path.relpath(r.path, root), r.pid, r.camid) for r in query + gallery]


def test_sysu_ids_one_per_line_give_the_same_split(tmp_path, sysu_root):
    copy = tmp_path / "sysu"
    shutil.copytree(sysu_root, copy)
    ids = (copy / "exp" / "test_id.txt").read_text().strip().split(",")
    (copy / "exp" / "test_id.txt").write_text("\n".join(ids) + "\n")
    assert sysu_mm01.read_ids(copy, "test") == [int(i) for i in ids]
    assert _split_rows(copy) == _split_rows(sysu_root)


def test_missing_listed_images_are_named_then_counted(tmp_path, regdb_root, llcm_root):
    copy = tmp_path / "regdb"
    shutil.copytree(regdb_root, copy)
    listed = [line.split()[0] for line in (copy / "idx" / "train_thermal_1.txt").open()]
    for rel in listed[:7]:
        (copy / rel).unlink()
    with pytest.raises(IdFileError) as err:
        regdb.train_records(copy, split="train+val", trial=1)
    message = str(err.value)
    assert "train_thermal_1.txt" in message and f"7 of {len(listed)} images" in message
    assert all(rel in message for rel in listed[:5]) and listed[5] not in message
    assert "and 2 more" in message

    copy = tmp_path / "llcm"
    shutil.copytree(llcm_root, copy)
    first = (copy / "idx" / "train_vis.txt").read_text().split()[0]
    (copy / first).unlink()
    with pytest.raises(IdFileError, match=rf"train_vis\.txt' lists 1 of .*{first}"):
        llcm.train_records(copy)


def test_images_smaller_than_a_patch_are_counted_in_a_warning(tmp_path, sysu_root, caplog):
    copy = tmp_path / "sysu"
    shutil.copytree(sysu_root, copy)
    train_ids = sysu_mm01.read_ids(copy, "train")
    shrunk = [copy / "cam1" / f"{pid:04d}" / "0001.jpg" for pid in train_ids[:3]]
    for path in shrunk:
        Image.new("RGB", (1, 1)).save(path)
    cfg = DataConfig(root=str(copy), train_split="train")
    with caplog.at_level(logging.WARNING, logger="csetgraph.data.records"):
        data = build_train_data(cfg, min_side=16)
    total = len(data.vis) + len(data.ir)
    assert f"3 of {total} images are smaller than one 16x16 patch" in caplog.text
    assert str(shrunk[0]) in caplog.text and "1x1 pixels" in caplog.text
    caplog.clear()
    # The fixture's own images are 32x16: not one is below a 16-pixel patch.
    with caplog.at_level(logging.WARNING, logger="csetgraph.data.records"):
        build_train_data(DataConfig(root=str(sysu_root), train_split="train"), min_side=16)
    assert "smaller than one" not in caplog.text
