"""Synthetic data is written only where synthetic data belongs (issue 14, finding 1 and 2).

Every refusal is checked against a checksum of every file in the folder, taken before and
after: nothing a user owns may change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from csetgraph.config import DataConfig, SyntheticConfig, load_config
from csetgraph.data import synthetic
from csetgraph.data.build import ensure_dataset
from csetgraph.errors import DataFolderError, DatasetLayoutError, IdFileError

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(
    num_train_ids=2,
    num_val_ids=1,
    num_test_ids=2,
    images_per_camera=1,
    height=16,
    width=8,
    seed=1,
)


def _checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones included), by relative path."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _config(root: Path, dataset: str = "sysu_mm01", enabled: bool = True, **size) -> DataConfig:
    return DataConfig(
        dataset=dataset,
        root=str(root),
        synthetic=SyntheticConfig(enabled=enabled, **{**SMALL, **size}),
    )


@pytest.fixture
def real_sysu(tmp_path, sysu_root) -> Path:
    """A complete SYSU-MM01 tree as its authors ship it: no csetgraph marker."""
    copy = tmp_path / "SYSU-MM01"
    shutil.copytree(sysu_root, copy)
    (copy / synthetic.MARKER).unlink()
    assert not any(p.name.startswith(".csetgraph") for p in copy.iterdir())
    return copy


def test_finding_1_a_sysu_copy_missing_test_ids_is_never_written(real_sysu):
    (real_sysu / "exp" / "test_id.txt").unlink()
    before = _checksums(real_sysu)
    with pytest.raises(DataFolderError) as err:
        ensure_dataset(_config(real_sysu), progress=False)
    message = str(err.value)
    assert str(real_sysu) in message
    assert "data.synthetic.enabled=false" in message and "empty folder" in message
    assert _checksums(real_sysu) == before
    # As a real data set: the missing id file is named at start-up, and still nothing changes.
    with pytest.raises(IdFileError, match=r"test_id\.txt"):
        ensure_dataset(_config(real_sysu, enabled=False), progress=False)
    assert _checksums(real_sysu) == before


def test_finding_2_regdb_pointed_at_a_sysu_folder_writes_nothing(real_sysu):
    before = _checksums(real_sysu)
    with pytest.raises(DataFolderError, match="synthetic regdb data set"):
        ensure_dataset(_config(real_sysu, dataset="regdb"), progress=False)
    assert _checksums(real_sysu) == before
    with pytest.raises(DatasetLayoutError, match="missing Visible, Thermal, idx"):
        ensure_dataset(_config(real_sysu, dataset="regdb", enabled=False), progress=False)
    assert _checksums(real_sysu) == before
    assert sorted(p.name for p in real_sysu.iterdir()) == sorted(
        [f"cam{c}" for c in range(1, 7)] + ["exp"]
    )


def test_a_folder_from_an_older_csetgraph_is_refused_with_how_to_regenerate(tmp_path):
    old = tmp_path / "synthetic_sysu_mm01"
    synthetic.generate_sysu_mm01(old, progress=False, **SMALL)
    (old / synthetic.MARKER).unlink()  # the old code wrote no marker
    before = _checksums(old)
    with pytest.raises(DataFolderError, match="older csetgraph has no marker: delete it"):
        synthetic.generate_sysu_mm01(old, progress=False, **SMALL)
    assert _checksums(old) == before
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(DataFolderError, match="is a file"):
        ensure_dataset(_config(tmp_path / "a_file"), progress=False)


@pytest.mark.parametrize("dataset", ["sysu_mm01", "regdb", "llcm"])
def test_missing_and_empty_folders_are_generated_and_marked_last(tmp_path, dataset):
    missing, empty = tmp_path / "missing" / "deeper", tmp_path / "empty"
    empty.mkdir()
    for root in (missing, empty):
        ensure_dataset(_config(root, dataset), progress=False)
        marker = synthetic.read_marker(root)
        assert marker["dataset"] == dataset and marker["version"] == synthetic.GENERATOR_VERSION
        assert marker["params"] == SMALL
        assert not (root / synthetic.PARTIAL_MARKER).exists()
        # The marker is written after every image and list (equal stamps allowed: the clock
        # may not tick between two writes).
        stamps = [p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()]
        assert (root / synthetic.MARKER).stat().st_mtime_ns == max(stamps)
    assert _checksums(missing) == _checksums(empty)


def test_same_parameters_reuse_and_changed_parameters_regenerate(tmp_path):
    root = tmp_path / "syn"
    ensure_dataset(_config(root), progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    ensure_dataset(_config(root), progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps

    ensure_dataset(_config(root, num_test_ids=3, seed=2), progress=False)
    fresh = tmp_path / "fresh"
    synthetic.generate_sysu_mm01(fresh, progress=False, **{**SMALL, "num_test_ids": 3, "seed": 2})
    assert _checksums(root) == _checksums(fresh)  # nothing stale left behind
    test_ids = (root / "exp" / "test_id.txt").read_text().strip().split(",")
    assert len(test_ids) == 3
    # Another layout in the same (ours) folder: regenerated as RegDB, no SYSU folders left.
    ensure_dataset(_config(root, dataset="regdb"), progress=False)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "Thermal",
        "Visible",
        "idx",
    ]


def test_a_generated_folder_changed_by_hand_is_not_regenerated(tmp_path):
    root = tmp_path / "syn"
    ensure_dataset(_config(root), progress=False)
    (root / "cam1" / "my_notes.txt").write_text("mine")
    before = _checksums(root)
    with pytest.raises(DataFolderError, match="changed since"):
        ensure_dataset(_config(root, seed=9), progress=False)
    assert _checksums(root) == before


def test_an_image_edited_in_place_to_the_same_size_is_not_regenerated(tmp_path):
    root = tmp_path / "syn"
    ensure_dataset(_config(root), progress=False)
    image = sorted((root / "cam1").rglob("*.jpg"))[0]
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the user's edit: same size, other content
    image.write_bytes(bytes(data))
    before = _checksums(root)
    with pytest.raises(DataFolderError, match="changed since"):
        ensure_dataset(_config(root, seed=9), progress=False)
    assert _checksums(root) == before


def test_a_marker_from_before_content_digests_still_decides_by_paths_and_sizes(tmp_path):
    root = tmp_path / "syn"
    ensure_dataset(_config(root), progress=False)
    marker = json.loads((root / synthetic.MARKER).read_text())
    del marker[synthetic.CONTENT_KEY]
    # What such a marker recorded: sha256 of the sorted [path, size] pairs, 16 hex digits.
    entries = sorted(
        [p.relative_to(root).as_posix(), p.stat().st_size]
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".csetgraph-synthetic")
    )
    text = json.dumps(entries, separators=(",", ":"))
    marker["content"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    (root / synthetic.MARKER).write_text(json.dumps(marker))
    ensure_dataset(_config(root), progress=False)  # same values: reused as it is
    ensure_dataset(_config(root, seed=9), progress=False)  # unchanged: regenerated
    assert synthetic.read_marker(root)["params"]["seed"] == 9
    assert synthetic.CONTENT_KEY in synthetic.read_marker(root)


def test_an_interrupted_generation_is_finished_on_the_next_run(tmp_path, monkeypatch):
    root = tmp_path / "syn"
    calls = {"n": 0}
    real_render = synthetic.render

    def failing_render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(_config(root), progress=False)
    assert (root / synthetic.PARTIAL_MARKER).exists() and synthetic.read_marker(root) is None
    monkeypatch.setattr(synthetic, "render", real_render)
    ensure_dataset(_config(root), progress=False)
    fresh = synthetic.generate_sysu_mm01(tmp_path / "fresh", progress=False, **SMALL)
    assert _checksums(root) == _checksums(fresh)


def test_real_data_recipes_never_generate():
    recipes = ["sysu_mm01.yaml", "regdb.yaml", "llcm.yaml"]
    for name in recipes:
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.data.synthetic.enabled is False, name
        assert cfg.data.dataset == name.removesuffix(".yaml")


def test_a_set_from_another_renderer_is_regenerated(tmp_path, monkeypatch, caplog):
    root = tmp_path / "syn"
    ensure_dataset(_config(root), progress=False)
    marker = json.loads((root / synthetic.MARKER).read_text())
    assert marker["renderer"] == synthetic.renderer_digest()
    marker["renderer"] = "an older renderer"
    (root / synthetic.MARKER).write_text(json.dumps(marker))
    before = _checksums(root)
    with caplog.at_level(logging.WARNING, logger="csetgraph.data.synthetic"):
        ensure_dataset(_config(root), progress=False)
    assert "regenerating the synthetic data set" in caplog.text and "older renderer" in caplog.text
    assert synthetic.read_marker(root)["renderer"] == synthetic.renderer_digest()
    after = _checksums(root)
    # The same renderer in fact: the same images; only the marker was rewritten.
    assert {k: v for k, v in after.items() if k != synthetic.MARKER} == {
        k: v for k, v in before.items() if k != synthetic.MARKER
    }
    assert after[synthetic.MARKER] != before[synthetic.MARKER]
    # Another renderer gives another digest.
    digest = synthetic.renderer_digest()
    monkeypatch.setattr(synthetic, "render", lambda *args, **kwargs: None)
    assert synthetic.renderer_digest() != digest
