"""A user error raised inside a DataLoader worker reaches the user as its own one line.

PyTorch re-raises a worker's exception in the main process as ``type(err)(text)`` where
``text`` is "Caught ... in DataLoader worker process N" and the worker's whole traceback
(issue 22: evaluate and ``index --images`` printed it). ``UserError`` keeps the original
message; every command's loader benefits, the commands need no code of their own.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from csetgraph.commands.index import main as index_main
from csetgraph.data.records import Record
from csetgraph.data.torch_datasets import ImageDataset
from csetgraph.errors import CorruptImageError, worker_message


def test_a_loader_worker_error_keeps_its_message(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    loader = DataLoader(ImageDataset([Record(str(bad), 1, 1, "ir")]), num_workers=1)
    with pytest.raises(CorruptImageError) as err:
        next(iter(loader))
    message = str(err.value)
    assert message.startswith(f"cannot read image {str(bad)!r} (")
    assert "\n" not in message and "DataLoader worker" not in message


def test_worker_message_reads_the_last_line_only_of_a_worker_text():
    text = (
        "Caught CorruptImageError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "csetgraph.errors.CorruptImageError: cannot read image 'a.png' (broken: yes)\n"
    )
    assert worker_message(text) == "cannot read image 'a.png' (broken: yes)"
    plain = "Caught you: this is an ordinary message"
    assert worker_message(plain) == plain


def test_index_images_with_a_corrupt_image_in_a_worker_is_one_line(
    tiny_run, sysu_root, tmp_path, capsys
):
    torch.set_num_threads(1)
    images = tmp_path / "gallery"
    images.mkdir()
    for src in sorted((sysu_root / "cam3").rglob("*.jpg"))[:3]:
        shutil.copy(src, images / f"{src.parent.name}_{src.name}")
    broken = images / "zz_broken.jpg"
    broken.write_bytes(b"not an image")
    argv = [str(tiny_run["dir"]), "data.num_workers=1", "--images", str(images)]
    argv += ["--modality", "ir", "--output", str(tmp_path / "index"), "--no-progress"]
    assert index_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"csetgraph index: error: cannot read image {str(broken)!r} (")
