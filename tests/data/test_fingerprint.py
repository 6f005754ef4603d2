"""Data-set fingerprints against a walk of the folder, and changes that must show."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from csetgraph.data import compare_fingerprints, dataset_fingerprint
from csetgraph.errors import ConfigError, DatasetLayoutError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _walk(root: Path) -> list[tuple[str, int]]:
    """Every image file and every .txt id/idx file under ``root``: (posix path, size)."""
    out = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == ".txt":
                out.append((path.relative_to(root).as_posix(), path.stat().st_size))
    return sorted(out)


def _id_line(path: Path) -> tuple[int, ...]:
    return tuple(sorted(int(x) for x in path.read_text().strip().split(",")))


def test_sysu_fingerprint_matches_a_walk_of_the_folder(sysu_root):
    fp = dataset_fingerprint(sysu_root, "sysu_mm01")
    assert fp.files == tuple(_walk(sysu_root))
    assert fp.ids == {s: _id_line(sysu_root / "exp" / f"{s}_id.txt") for s in fp.ids}
    assert set(fp.ids) == {"train", "val", "test"}
    walked = [p for p, _ in _walk(sysu_root) if p.startswith("cam")]
    ir = sum(p.startswith(("cam3/", "cam6/")) for p in walked)
    assert fp.images == {"vis": len(walked) - ir, "ir": ir}
    summary = fp.to_dict()
    assert summary["files"] == len(fp.files)
    assert summary["bytes"] == sum(os.path.getsize(sysu_root / p) for p, _ in fp.files)
    assert summary["ids"] == {s: len(v) for s, v in fp.ids.items()}
    assert re.fullmatch("[0-9a-f]{16}", fp.digest)


def test_regdb_and_llcm_fingerprints_match_their_idx_files(regdb_root, llcm_root):
    fp = dataset_fingerprint(regdb_root, "regdb", trial=2)
    # Every RegDB image is in trial 2's train or test lists; all 40 idx files are covered.
    assert fp.files == tuple(_walk(regdb_root))
    test_labels = {int(s.split()[1]) for s in (regdb_root / "idx/test_visible_2.txt").open()}
    assert fp.ids["test"] == tuple(sorted(test_labels))
    assert set(fp.ids["train"]) | set(fp.ids["val"]) == {
        int(s.split()[1]) for s in (regdb_root / "idx/train_thermal_2.txt").open()
    }
    assert fp.images["vis"] == sum(1 for _ in (regdb_root / "Visible").rglob("*.jpg"))
    assert dataset_fingerprint(regdb_root, "regdb", trial=3).digest != fp.digest

    fp = dataset_fingerprint(llcm_root, "llcm")
    assert fp.files == tuple(_walk(llcm_root))
    assert fp.ids["test"] == _id_line(llcm_root / "idx" / "test_id.txt")
    nir = sum(1 for p, _ in fp.files if p.startswith(("train_nir/", "test_nir/")))
    assert fp.images["ir"] == nir


def test_a_changed_data_set_changes_the_fingerprint(tmp_path, sysu_root):
    copy = tmp_path / "copy"
    shutil.copytree(sysu_root, copy)
    base = dataset_fingerprint(copy, "sysu_mm01")
    assert dataset_fingerprint(copy, "sysu_mm01") == base  # the copy's place does not count
    assert base.digest == dataset_fingerprint(sysu_root, "sysu_mm01").digest
    # A file the readers never read leaves it alone.
    (copy / "notes.txt").write_text("my notes")
    assert dataset_fingerprint(copy, "sysu_mm01").digest == base.digest

    image = next((copy / "cam1").rglob("*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")  # one byte longer
    changed = dataset_fingerprint(copy, "sysu_mm01")
    assert changed.digest != base.digest
    assert compare_fingerprints(base.to_dict(), changed.to_dict()) == [
        f"bytes: {base.to_dict()['bytes']} recorded, {base.to_dict()['bytes'] + 1} now"
    ]

    image.unlink()
    removed = dataset_fingerprint(copy, "sysu_mm01").to_dict()
    diff = compare_fingerprints(base.to_dict(), removed)
    assert f"files: {len(base.files)} recorded, {len(base.files) - 1} now" in diff
    assert f"vis images: {base.images['vis']} recorded, {base.images['vis'] - 1} now" in diff

    # One test identity moved into the validation split: same files, other ids.
    shutil.rmtree(copy)
    shutil.copytree(sysu_root, copy)
    val, test = (_id_line(copy / "exp" / f"{s}_id.txt") for s in ("val", "test"))
    (copy / "exp" / "val_id.txt").write_text(",".join(map(str, (*val, test[0]))) + "\n")
    (copy / "exp" / "test_id.txt").write_text(",".join(map(str, test[1:])) + "\n")
    moved = dataset_fingerprint(copy, "sysu_mm01").to_dict()
    diff = compare_fingerprints(base.to_dict(), moved)
    assert f"test ids: {len(test)} recorded, {len(test) - 1} now" in diff
    assert f"val ids: {len(val)} recorded, {len(val) + 1} now" in diff
    assert compare_fingerprints(base.to_dict(), base.to_dict()) == []


def test_fingerprint_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="sysu_mm01, regdb, llcm"):
        dataset_fingerprint(tmp_path, "market1501")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        dataset_fingerprint(tmp_path / "nothing", "llcm")
