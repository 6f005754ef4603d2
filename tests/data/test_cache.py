"""The decode-once cache: content, reuse, rebuilds on change, safe interruption, location."""

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import csetgraph.data.cache as cache_mod
from csetgraph.data.cache import default_cache_dir, ensure_cache
from csetgraph.errors import CorruptImageError


@pytest.fixture
def image_folder(tmp_path):
    """Six random images of different sizes and formats, in a folder of their own."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 20), (33, 17), (64, 32), (20, 10), (48, 30), (36, 18)]):
        path = folder / f"{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def folder_listing(folder: Path):
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())


def cache_files(folder: Path):
    """What a cache folder holds besides the (empty) lock files."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


def pillow_resized(path, height, width):
    """The reference: Pillow's own bilinear resize (what T.Resize does to a PIL image)."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((width, height), Image.BILINEAR)
    return np.array(img).transpose(2, 0, 1)  # (3, H, W)


def test_cache_holds_each_image_resized_like_pillow(image_folder, tmp_path):
    cache = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    array = cache.open()
    assert array.shape == (6, 3, 24, 12) and array.dtype == np.uint8
    for i, path in enumerate(image_folder):
        assert np.array_equal(array[i], pillow_resized(path, 24, 12)), path


def test_cache_is_reused_when_nothing_changed(image_folder, tmp_path, monkeypatch):
    first = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    stamp = first.path.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(cache_mod, "_build", no_build)
    again = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    assert again == first and again.path.stat().st_mtime_ns == stamp


def test_replaced_image_rebuilds_the_cache(image_folder, tmp_path):
    old = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    new_pixels = np.full((40, 20, 3), 123, dtype=np.uint8)
    Image.fromarray(new_pixels).save(image_folder[0])
    new = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    assert new.fingerprint != old.fingerprint and new.path != old.path
    assert np.array_equal(new.open()[0], pillow_resized(image_folder[0], 24, 12))
    assert (new.open()[0] == 123).all()
    assert np.array_equal(new.open()[1:], old.open()[1:])  # the others are as they were


@pytest.mark.parametrize(
    "change",
    ["touch", "remove", "add", "reorder", "size"],
)
def test_any_change_to_files_or_size_changes_the_fingerprint(image_folder, tmp_path, change):
    base = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    paths, size = list(image_folder), (24, 12)
    if change == "touch":
        st = os.stat(paths[2])
        os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "remove":
        paths = paths[:-1]
    elif change == "add":
        paths = [*paths, paths[0]]
    elif change == "reorder":
        paths = paths[::-1]
    else:
        size = (26, 12)
    other = ensure_cache(paths, *size, tmp_path / "cache", progress=False)
    assert other.fingerprint != base.fingerprint and other.path != base.path
    assert other.num_images == len(paths)


def test_interrupted_build_leaves_no_cache_and_the_next_run_builds_it(
    image_folder, tmp_path, monkeypatch
):
    folder = tmp_path / "cache"
    real_load, calls = cache_mod.load_image, []

    def load_then_interrupt(path):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_load(path)

    monkeypatch.setattr(cache_mod, "load_image", load_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(image_folder, 24, 12, folder, progress=False)
    assert cache_files(folder) == []  # neither the array, a manifest nor a temporary file

    monkeypatch.setattr(cache_mod, "load_image", real_load)
    cache = ensure_cache(image_folder, 24, 12, folder, progress=False)
    assert np.array_equal(cache.open()[3], pillow_resized(image_folder[3], 24, 12))


def test_array_without_manifest_is_not_trusted(image_folder, tmp_path):
    """A crash between moving the array and writing the manifest: the array is rebuilt."""
    cache = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    cache.path.with_suffix(".json").unlink()
    np.save(cache.path, np.zeros((6, 3, 24, 12), np.uint8))  # stale content, right shape
    again = ensure_cache(image_folder, 24, 12, tmp_path / "cache", progress=False)
    assert np.array_equal(again.open()[0], pillow_resized(image_folder[0], 24, 12))


def test_build_with_workers_equals_build_without(image_folder, tmp_path):
    a = ensure_cache(image_folder, 24, 12, tmp_path / "a", num_workers=0, progress=False)
    b = ensure_cache(image_folder, 24, 12, tmp_path / "b", num_workers=2, progress=False)
    assert np.array_equal(a.open(), b.open())


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_is_one_clear_error_and_no_cache(image_folder, tmp_path, num_workers):
    Path(image_folder[2]).write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match=r"cannot read image .*2\.jpg") as err:
        ensure_cache(image_folder, 24, 12, tmp_path / "c", num_workers=num_workers, progress=False)
    assert "\n" not in str(err.value)  # one line, not a worker's traceback
    assert cache_files(tmp_path / "c") == []


def test_missing_image_names_the_file(image_folder, tmp_path):
    os.remove(image_folder[1])
    with pytest.raises(CorruptImageError, match=r"1\.png.* does not exist"):
        ensure_cache(image_folder, 24, 12, tmp_path / "c", progress=False)


def test_nothing_is_written_inside_the_data_set_folder(image_folder, tmp_path, monkeypatch):
    data_folder = Path(image_folder[0]).parent
    before = folder_listing(data_folder)
    monkeypatch.delenv("CSETGRAPH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = ensure_cache(image_folder, 24, 12, None, progress=False)  # the default folder
    assert folder_listing(data_folder) == before
    assert cache.path.parent == tmp_path / "xdg" / "csetgraph"


def test_default_cache_dir_follows_its_variable_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CSETGRAPH_CACHE_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "own"
    monkeypatch.delenv("CSETGRAPH_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "csetgraph"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "csetgraph"


def test_a_second_process_waits_for_the_build_in_progress(image_folder, tmp_path):
    """Under the build lock the cache is not touched; released, the waiting call returns."""
    folder = tmp_path / "cache"
    first = ensure_cache(image_folder, 24, 12, folder, progress=False)
    lock = first.path.with_suffix(".lock")
    first.path.with_suffix(".json").unlink()  # as if the first build had not finished yet
    result = {}
    with cache_mod._build_lock(lock):
        waiter = threading.Thread(
            target=lambda: result.update(
                c=ensure_cache(image_folder, 24, 12, folder, progress=False)
            )
        )
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not first.path.with_suffix(".json").exists()
    waiter.join(timeout=60)
    assert result["c"] == first
    assert np.array_equal(result["c"].open()[2], pillow_resized(image_folder[2], 24, 12))


def test_concurrent_processes_build_the_cache_once(image_folder, tmp_path, monkeypatch):
    """Three processes (forked, so they share the patch below) ask for the same missing
    cache at once; a slow build leaves them all time to start their own, yet one builds."""
    folder, log = tmp_path / "cache", tmp_path / "builds.txt"
    real = cache_mod._build

    def slow_counted_build(*args, **kwargs):
        with open(log, "a") as f:
            f.write("build\n")
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "_build", slow_counted_build)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=ensure_cache, args=(image_folder, 24, 12, folder), kwargs={"progress": False}
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().splitlines() == ["build"]
    monkeypatch.setattr(cache_mod, "_build", real)
    cache = ensure_cache(image_folder, 24, 12, folder, progress=False)
    assert np.array_equal(cache.open()[5], pillow_resized(image_folder[5], 24, 12))
