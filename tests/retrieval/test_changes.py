"""Adding, removing and the addition log: searched against brute force, replayed after a crash."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from csetgraph.errors import ConfigError, IndexFolderError
from csetgraph.retrieval import KINDS, GalleryIndex, GalleryItemError
from csetgraph.retrieval.index import WAL_NAME


def exact_ids(feats, ids, queries, k):
    """Reference: the ``k`` ids of largest inner product, by a dense numpy product."""
    sims = queries.astype(np.float64) @ feats.astype(np.float64).T
    return np.asarray(ids)[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("kind", KINDS)
def test_removed_items_are_never_found_and_ids_are_not_reused(gallery, kind):
    assert KINDS
    feats, meta, _ = gallery
    index = GalleryIndex.build(feats[:1000], meta[:1000], kind=kind)
    gone = [5, 17, 999]
    for i in gone:
        assert index.remove(i) == meta[i]
    assert len(index) == 997 and not set(gone) & set(index.ids)
    # Each removed item's own vector as the query: itself is never returned.
    _, found = index.search(feats[gone], k=10)
    assert not set(found.ravel().tolist()) & set(gone)
    keep = [i for i in range(1000) if i not in gone]
    ref = exact_ids(feats[keep], keep, feats[gone], 1)
    if kind == "flat":
        np.testing.assert_array_equal(found[:, :1], ref)
    new = index.add(feats[1000:1002], meta[1000:1002])
    assert new == [1000, 1001]  # 999 was removed, but ids are never reused
    assert index.item(1001) == meta[1001]
    with pytest.raises(GalleryItemError, match="no gallery item with id 17"):
        index.remove(17)
    if kind == "hnsw":  # faiss cannot unlink a node: the vector itself is erased
        assert not np.any(index._index.reconstruct(17))  # IndexIDMap2: by gallery id
        assert np.any(index._index.reconstruct(16))


def test_additions_survive_without_a_save(gallery, tmp_path):
    feats, meta, queries = gallery
    GalleryIndex.build(feats[:500], meta[:500]).save(tmp_path / "g")
    live = GalleryIndex.load(tmp_path / "g", writable=True)
    ids = live.add(feats[500:510], meta[500:510], when="2026-01-02T03:04:05Z")
    live.remove(3)
    live.close()  # no save: the three files still hold the first 500 items
    assert len(json.loads((tmp_path / "g" / "metadata.json").read_text())) == 500
    again = GalleryIndex.load(tmp_path / "g")
    keep = [i for i in range(510) if i != 3]
    assert again.ids == keep and again.item(ids[-1]) == meta[509]
    assert again.manifest.last_added == "2026-01-02T03:04:05Z"
    _, found = again.search(queries, k=10)
    np.testing.assert_array_equal(found, exact_ids(feats[keep], keep, queries, 10))


def test_a_torn_last_record_is_dropped_and_a_corrupt_one_refused(gallery, tmp_path):
    feats, meta, _ = gallery
    GalleryIndex.build(feats[:50], meta[:50]).save(tmp_path / "g")
    live = GalleryIndex.load(tmp_path / "g", writable=True)
    live.add(feats[50:52], meta[50:52])
    live.close()
    wal = tmp_path / "g" / WAL_NAME
    lines = wal.read_bytes().split(b"\n")
    # A crash in the middle of the second record's write: half a line, no newline.
    wal.write_bytes(lines[0] + b"\n" + lines[1][: len(lines[1]) // 2])
    assert GalleryIndex.load(tmp_path / "g").ids == [*range(50), 50]
    reopened = GalleryIndex.load(tmp_path / "g", writable=True)  # folds the log in
    assert wal.read_bytes() == b"" and len(GalleryIndex.load(tmp_path / "g")) == 51
    assert reopened.add(feats[52:54], meta[52:54]) == [51, 52]  # after the cut-off record
    reopened.close()
    assert GalleryIndex.load(tmp_path / "g").ids == [*range(53)]
    damaged = wal.read_bytes().replace(b'"op":"add"', b'"op":"adD"', 1)
    wal.write_bytes(damaged)
    with pytest.raises(IndexFolderError, match="line 1 is corrupt"):
        GalleryIndex.load(tmp_path / "g")


def test_replay_after_a_crash_between_snapshot_and_log_truncation(gallery, tmp_path):
    feats, meta, queries = gallery
    GalleryIndex.build(feats[:200], meta[:200], kind="hnsw").save(tmp_path / "g")
    live = GalleryIndex.load(tmp_path / "g", writable=True)
    live.add(feats[200:205], meta[200:205])
    live.remove(202)
    live.remove(7)
    log = (tmp_path / "g" / WAL_NAME).read_bytes()
    live.save(tmp_path / "g")
    assert (tmp_path / "g" / WAL_NAME).read_bytes() == b""  # the snapshot holds it all
    live.close()
    # The crash: the new snapshot is written, the log was not yet emptied, and the manifest
    # is the old one (its wal_seq 0), so every record is replayed onto the new files.
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    manifest["wal_seq"] = 0
    (tmp_path / "g" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "g" / WAL_NAME).write_bytes(log)
    again = GalleryIndex.load(tmp_path / "g")
    keep = [i for i in range(205) if i not in (7, 202)]
    assert again.ids == keep
    _, found = again.search(queries, k=5)
    assert not {7, 202} & set(found.ravel().tolist())


@pytest.mark.parametrize(
    "kind,params,needle",
    [
        ("ivf", {"nlist": 100_000}, "nlist=100000 is out of range"),
        ("ivf", {"nprobe": 0}, "nprobe=0 is out of range"),
        ("ivf", {"nlist": 8, "nprobe": 9}, "nprobe=9 is out of range"),
        ("hnsw", {"M": 0}, "M=0 is out of range"),
        ("hnsw", {"M": -1}, "M=-1 is out of range"),
        ("hnsw", {"ef_search": 0}, "ef_search=0"),
        ("hnsw", {"M": 2.5}, "must be an integer"),
    ],
)
def test_index_parameters_are_checked_before_faiss(gallery, kind, params, needle):
    feats, meta, _ = gallery
    with pytest.raises(ConfigError, match=needle):
        GalleryIndex.build(feats[:300], meta[:300], kind=kind, **params)


def test_metadata_items_missing_a_key_are_one_clear_error(gallery, tmp_path):
    feats, meta, _ = gallery
    GalleryIndex.build(feats[:20], meta[:20]).save(tmp_path / "g")
    items = json.loads((tmp_path / "g" / "metadata.json").read_text())
    del items[4]["camid"]
    (tmp_path / "g" / "metadata.json").write_text(json.dumps(items))
    with pytest.raises(IndexFolderError, match=r"metadata.json item 4 lacks \['camid'\]"):
        GalleryIndex.load(tmp_path / "g")


def test_a_version_1_folder_still_loads(gallery, tmp_path):
    """Folders written before gallery ids: a plain faiss index, items without ids."""
    import faiss

    feats, meta, queries = gallery
    flat = faiss.IndexFlatIP(feats.shape[1])
    flat.add(feats[:300])
    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "index.faiss").write_bytes(faiss.serialize_index(flat).tobytes())
    (folder / "metadata.json").write_text(json.dumps(meta[:300]))
    manifest = {"kind": "flat", "dim": feats.shape[1], "version": 1}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    index = GalleryIndex.load(folder)
    _, found = index.search(queries, k=10)
    np.testing.assert_array_equal(found, exact_ids(feats[:300], range(300), queries, 10))
    assert index.add(feats[300:301], meta[300:301]) == [300]
    shutil.rmtree(folder)
