"""Mistakes in a data set that used to pass without a word (issue 22).

* a 16-bit greyscale PNG (a thermal camera's usual format) is scaled by its range, not
  clipped at 255, in the one conversion every reader uses;
* overlapping train/test id files are refused, naming the identities;
* an identity listed without images is named in a warning;
* a training image replaced by a dangling symbolic link or a link loop is an error naming
  it, not an image fewer;
* id files: a UTF-8 byte-order mark is accepted, other encodings are one clear error.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from csetgraph.config import DataConfig, SyntheticConfig
from csetgraph.data import dataset_fingerprint, sysu_mm01
from csetgraph.data.build import build_train_data, ensure_dataset
from csetgraph.data.torch_datasets import ImageDataset
from csetgraph.data.records import Record, image_to_rgb, load_image, read_id_file
from csetgraph.data.regdb import read_list
from csetgraph.data.transforms import build_test_transform
from csetgraph.errors import CorruptImageError, IdFileError


def _gradient_8bit() -> np.ndarray:
    """An 8-bit greyscale picture spanning 0..255 (a ramp plus a bright square)."""
    img = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (48, 1))  # (48, 32): 0, 8, ..., 248
    img[10:20, 5:15] = 255
    return img


def test_a_16_bit_thermal_png_gives_the_8_bit_picture(tmp_path):
    eight = _gradient_8bit()
    # A thermal camera's counts: the same picture in a narrow band of the 16-bit range.
    counts = eight.astype(np.uint16) * 40 + 5000  # 5000 .. 15200
    Image.fromarray(eight).save(tmp_path / "q8.png")
    Image.fromarray(counts).save(tmp_path / "q16.png")
    with Image.open(tmp_path / "q16.png") as raw:
        assert raw.mode.startswith("I")  # Pillow reads it as 16-bit (or 32-bit) integers
        clipped = np.asarray(raw.convert("RGB"))
    assert (clipped == 255).all()  # what Pillow alone makes of it: one white frame
    expected = np.repeat(eight[..., None], 3, axis=2)  # the 8-bit picture, grey RGB
    assert np.array_equal(np.asarray(load_image(tmp_path / "q16.png")), expected)
    assert np.array_equal(np.asarray(load_image(tmp_path / "q8.png")), expected)
    # The evaluation loader (ImageDataset) and so every embedding sees the same tensor.
    tf = build_test_transform(48, 32)
    rec = [Record(str(tmp_path / n), 1, 3, "ir") for n in ("q8.png", "q16.png")]
    a, b = (ImageDataset(rec, tf)[i][0] for i in (0, 1))
    assert torch.equal(a, b)


def test_deep_images_of_other_modes_and_a_flat_one():
    values = np.array([[0.5, 1.5], [2.5, 1.0]], dtype=np.float32)
    out = np.asarray(image_to_rgb(Image.fromarray(values)))  # mode F
    # (x - 0.5) / 2 * 255, rounded: by hand 0, 127.5 -> 128, 255, 63.75 -> 64
    assert out[..., 0].tolist() == [[0, 128], [255, 64]]
    flat = Image.fromarray(np.full((2, 3), 7000, dtype=np.uint16))
    assert np.asarray(image_to_rgb(flat)).max() == 0  # no range: black, not white
    rgb = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    assert np.array_equal(np.asarray(image_to_rgb(rgb)), np.asarray(rgb))  # 8-bit untouched


def _copy(sysu_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sysu_root, data)
    return data


def _cfg(root, **extra) -> DataConfig:
    return DataConfig(root=str(root), synthetic=SyntheticConfig(enabled=False), **extra)


def test_overlapping_train_and_test_ids_are_refused_by_name(sysu_root, tmp_path):
    data = _copy(sysu_root, tmp_path)
    train = read_id_file(data / "exp" / "train_id.txt")
    test = read_id_file(data / "exp" / "test_id.txt")
    (data / "exp" / "test_id.txt").write_text(",".join(map(str, [*test, train[1], train[0]])))
    shared = ", ".join(map(str, sorted(train[:2])))
    message = rf"train_id.txt and exp/test_id.txt of .* share 2 identities \({shared}\)"
    with pytest.raises(IdFileError, match=message):
        ensure_dataset(_cfg(data), progress=False)
    with pytest.raises(IdFileError, match=message):  # the evaluation's reader too
        sysu_mm01.test_split(data, mode="all", trial=0)


def test_a_test_id_without_images_is_named_in_a_warning(sysu_root, tmp_path, caplog):
    data = _copy(sysu_root, tmp_path)
    test = read_id_file(data / "exp" / "test_id.txt")
    for camera in range(1, 7):
        shutil.rmtree(data / f"cam{camera}" / f"{test[0]:04d}", ignore_errors=True)
    with caplog.at_level(logging.WARNING):
        ensure_dataset(_cfg(data), progress=False)
    warned = [r.getMessage() for r in caplog.records if "have no images" in r.getMessage()]
    assert (
        len(warned) == 1
        and f"1 test identities of {data} have no images ({test[0]})" in (warned[0])
    )
    assert sysu_mm01.ids_without_images(sysu_root, split="test") == []  # the intact tree


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_broken_symbolic_link_is_an_error_naming_it(sysu_root, tmp_path, kind):
    data = _copy(sysu_root, tmp_path)
    cfg = _cfg(data)
    before = build_train_data(cfg)
    victim = sorted((data / "cam1").rglob("*.jpg"))[0]
    train_ids = set(read_id_file(data / "exp" / "train_id.txt"))
    train_ids |= set(read_id_file(data / "exp" / "val_id.txt"))
    assert int(victim.parent.name) in train_ids  # a training image
    victim.unlink()
    if kind == "dangling":
        os.symlink(tmp_path / "gone.jpg", victim)
    else:
        os.symlink(victim, victim)  # points at itself
    records = sysu_mm01.train_records(data)
    assert str(victim) in [r.path for r in records]  # listed, not skipped
    assert len(records) == len(before.vis) + len(before.ir)
    with pytest.raises(CorruptImageError, match=rf"image .*'{victim}'"):
        load_image(victim)
    dataset_fingerprint(data, "sysu_mm01")  # the fingerprint leaves reading it to the loader
    # data.skip_corrupt=true skips it, counted, as any unreadable image
    skipped = build_train_data(_cfg(data, skip_corrupt=True))
    assert len(skipped.vis) + len(skipped.ir) == len(records) - 1


def test_id_files_with_a_byte_order_mark_or_another_encoding(tmp_path):
    bom = tmp_path / "test_id.txt"
    bom.write_bytes("\ufeff3,1,2\n".encode())
    assert read_id_file(bom) == [3, 1, 2]
    idx = tmp_path / "train_visible_1.txt"
    idx.write_bytes("\ufeffVisible/1/a.bmp 0\n".encode())
    assert read_list(idx) == [("Visible/1/a.bmp", 0)]
    latin = tmp_path / "val_id.txt"
    latin.write_bytes(b"1,2\n# caf\xe9\n")
    with pytest.raises(
        IdFileError, match=r"'.*val_id.txt' is not UTF-8 text \(byte 0xe9 at offset 9\)"
    ):
        read_id_file(latin)
    with pytest.raises(IdFileError, match="is not UTF-8 text"):
        read_list(latin)
