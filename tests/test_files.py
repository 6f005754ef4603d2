"""csetgraph.files: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from csetgraph.engine.run_guard import remove_stale_temporaries
from csetgraph.files import atomic_path, write_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_text_is_written_as_utf8_and_bytes_as_given(tmp_path):
    text_path, bytes_path = tmp_path / "a.txt", tmp_path / "b.bin"
    write_atomic(text_path, "Rank-1 ± std, α = 0.7\n")
    blob = bytes(range(256)) * 3
    write_atomic(bytes_path, blob)
    assert text_path.read_bytes() == "Rank-1 ± std, α = 0.7\n".encode()
    assert bytes_path.read_bytes() == blob
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]  # no temporaries


def test_missing_parent_folders_are_created(tmp_path):
    path = tmp_path / "runs" / "x" / "metrics.json"
    write_atomic(path, "{}")
    assert path.read_text() == "{}"


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "last.pt"
    write_atomic(path, b"old checkpoint")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_killed_process_leaves_the_old_file_and_a_hidden_temporary(tmp_path):
    """SIGKILL-like exit (os._exit) in the middle of a write: no cleanup code runs at all."""
    path = tmp_path / "metrics.json"
    write_atomic(path, '{"old": 1}')
    code = textwrap.dedent(
        f"""
        import os
        from csetgraph.files import atomic_path
        with atomic_path({str(path)!r}) as tmp:
            tmp.write_text('{{"new": ')
            os._exit(9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=os.environ, check=False)
    assert proc.returncode == 9
    assert path.read_text() == '{"old": 1}'
    left = [p.name for p in tmp_path.iterdir() if p.name != "metrics.json"]
    assert len(left) == 1 and left[0].startswith(".metrics.json.") and left[0].endswith(".tmp")
    assert remove_stale_temporaries(tmp_path) == 1  # what a run folder does at start
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_new_file_gets_the_permissions_open_would_give(tmp_path):
    old_umask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "atomic.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old_umask)
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt") == 0o640


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    write_atomic(path, '{"a": 1}')
    assert _mode(path) == 0o600
    assert path.read_text() == '{"a": 1}'


def test_keep_suffix_lets_a_writer_pick_the_format_from_the_name(tmp_path):
    seen = []
    with atomic_path(tmp_path / "ranked.png", keep_suffix=True) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"\x89PNG")
    assert seen[0].startswith(".ranked.") and seen[0].endswith(".tmp.png")
    assert (tmp_path / "ranked.png").read_bytes() == b"\x89PNG"


def test_two_writers_never_share_a_temporary_name(tmp_path):
    path = tmp_path / "x.json"
    with atomic_path(path) as first, atomic_path(path) as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert path.read_text() == "1"  # the outer block ends last and wins
