"""Run folders are never overwritten, one process writes at a time, a failed start writes
nothing, a resume keeps the run's config, and failed checkpoint writes lose nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csetgraph.config import ConfigError, load_config
from csetgraph.engine import checkpoint as checkpoint_mod
from csetgraph.engine import load_checkpoint, train
from csetgraph.engine import trainer as trainer_mod
from csetgraph.engine.run_folder import LOCK_NAME
from csetgraph.engine.trainer import Trainer
from csetgraph.errors import CheckpointError, DatasetLayoutError, RunFolderError


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def copy_run(tiny_run, tmp_path):
    """A private copy of the shared tiny run (1 epoch done) at ``tmp_path/tiny``."""
    target = tmp_path / "tiny"
    shutil.copytree(tiny_run["dir"], target)
    return target


def cfg_for(tiny_config, out_dir, name, *extra):
    return load_config(None, tiny_config(out_dir, name, "eval.trials=1", *extra))


# ------------------------------------------------------------------ never overwritten


def test_a_run_name_holding_a_run_is_refused_and_left_unchanged(tiny_run, tiny_config):
    run = tiny_run["dir"]
    before = checksums(run)
    with pytest.raises(
        RunFolderError, match=rf"already holds a run.*train\.resume={re.escape(str(run))}"
    ):
        train(cfg_for(tiny_config, run.parent, run.name), progress=False)
    assert checksums(run) == before


def test_overwrite_moves_the_old_run_aside_intact(copy_run, tiny_config):
    before = checksums(copy_run)
    train(cfg_for(tiny_config, copy_run.parent, "tiny", "train.overwrite=true"), progress=False)
    aside = [p for p in copy_run.parent.iterdir() if p.name.startswith("tiny.replaced-")]
    assert len(aside) == 1 and checksums(aside[0]) == before
    assert (copy_run / "metrics.json").is_file() and (copy_run / "fingerprint.json").is_file()


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["data.root=/nonexistent/sysu", "data.synthetic.enabled=false"], DatasetLayoutError),
        (["model.se.layers=[99]"], ValueError),  # refused while the model is built
        (["data.height=40"], ConfigError),  # not a multiple of the 16-pixel patch
        (["train.resume=/nonexistent/run"], CheckpointError),
    ],
)
def test_a_failed_start_leaves_no_folder(tiny_config, tmp_path, extra, error):
    with pytest.raises(error):
        train(cfg_for(tiny_config, tmp_path, "new", *extra), progress=False)
    assert not (tmp_path / "new").exists()


def test_a_refused_resume_leaves_the_run_unchanged(copy_run, tiny_config):
    before = checksums(copy_run)
    asked = [f"train.resume={copy_run}", "train.epochs=2", "model.depth=3", "train.lr=0.5"]
    with pytest.raises(ConfigError, match=r"model\.depth: run has 2, asked 3; train\.lr"):
        train(cfg_for(tiny_config, copy_run.parent, "tiny", *asked), progress=False)
    assert checksums(copy_run) == before


# ------------------------------------------------------------------ the lock


def test_a_live_lock_refuses_a_second_process(copy_run, tiny_config):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": owner.pid, "host": socket.gethostname()}
        (copy_run / LOCK_NAME).write_text(json.dumps(lock))
        before = checksums(copy_run)
        resume = cfg_for(tiny_config, copy_run.parent, "tiny", f"train.resume={copy_run}")
        with pytest.raises(RunFolderError, match=rf"in use by process {owner.pid}"):
            train(resume, progress=False)
        assert checksums(copy_run) == before
    finally:
        owner.kill()
        owner.wait()


def test_resume_takes_over_a_stale_lock_removes_temporaries_and_records_safe_changes(
    copy_run, tiny_config, caplog
):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (copy_run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    stale = copy_run / "checkpoints" / ".last.pt.x1y2.tmp"
    stale.write_bytes(b"")  # what a kill -9 during a checkpoint write leaves
    stale_json = copy_run / ".metrics.json.123.tmp"
    stale_json.write_text("{")
    config_yaml = (copy_run / "config.yaml").read_bytes()
    asked = [f"train.resume={copy_run}", "train.epochs=2", "eval.modes=[all]"]
    with caplog.at_level("WARNING", logger="csetgraph"):
        train(cfg_for(tiny_config, copy_run.parent, "tiny", *asked), progress=False)
    assert "stale lock" in caplog.text
    assert not stale.exists() and not stale_json.exists()
    assert not (copy_run / LOCK_NAME).exists()
    assert (copy_run / "config.yaml").read_bytes() == config_yaml  # the original stays
    (entry,) = json.loads((copy_run / "resumes.json").read_text())
    assert entry["epoch"] == 1
    assert entry["changed"] == {
        "train.epochs": [1, 2],
        "eval.modes": [["all", "indoor"], ["all"]],
        "eval.trials": [2, 1],
    }
    ckpt = load_checkpoint(copy_run)
    assert ckpt["epoch"] == 2 and json.loads(ckpt["config"])["train"]["epochs"] == 2
    assert set(json.loads((copy_run / "metrics.json").read_text())) == {"all", "mechanisms"}
    # The mechanism history survives the resume (epoch 1 from last.pt, epoch 2 trained now).
    section = json.loads((copy_run / "metrics.json").read_text())["mechanisms"]
    assert [e["epoch"] for e in section["epochs"]] == [1, 2]


def test_resume_without_a_complete_checkpoint_offers_to_start_over(tiny_config, tmp_path):
    run = tmp_path / "early"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(RunFolderError, match=r"no complete checkpoint.*train\.overwrite=true"):
        train(cfg_for(tiny_config, tmp_path, "early", f"train.resume={run}"), progress=False)


def test_best_pt_and_newer_checkpoints_are_refused_with_a_message(copy_run, tiny_config):
    weights = load_checkpoint(copy_run)["model"]
    best = copy_run / "checkpoints" / "best.pt"
    torch.save({"version": 2, "model": weights, "epoch": 1, "val": {}}, best)
    with pytest.raises(CheckpointError, match=r"weights only \(no optimizer.*train\.resume="):
        train(cfg_for(tiny_config, copy_run.parent, "x", f"train.resume={best}"), progress=False)
    newer = copy_run / "checkpoints" / "newer.pt"
    torch.save({"version": 99, "model": weights}, newer)
    with pytest.raises(CheckpointError, match=r"format version 99, newer than"):
        load_checkpoint(newer)


# ------------------------------------------------------------------ faults while writing


class _FailingFile:
    """A binary file whose writes raise ``OSError(code)`` once half of ``limit`` bytes passed."""

    def __init__(self, fh, limit: int, code: int):
        self.fh, self.left, self.code = fh, limit // 2, code

    def write(self, data) -> int:
        if len(data) > self.left:
            self.fh.write(bytes(memoryview(data)[: self.left]))
            self.left = 0
            raise OSError(self.code, os.strerror(self.code))
        self.left -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_checkpoint_write_failing_midway_loses_nothing(copy_run, tiny_config, monkeypatch, code):
    last = copy_run / "checkpoints" / "last.pt"
    good, size = last.read_bytes(), last.stat().st_size
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        checkpoint_mod.os,
        "fdopen",
        lambda fd, mode: _FailingFile(real_fdopen(fd, mode), size, code),
    )
    asked = [f"train.resume={copy_run}", "train.epochs=2"]
    with pytest.raises(
        CheckpointError, match=rf"could not write {re.escape(str(last))} .*{os.strerror(code)}"
    ):
        train(cfg_for(tiny_config, copy_run.parent, "tiny", *asked), progress=False)
    monkeypatch.undo()
    assert last.read_bytes() == good  # the previous checkpoint, untouched
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]  # no temporary left
    assert not (copy_run / LOCK_NAME).exists()
    if code == errno.ENOSPC:  # and the run resumes from it
        train(cfg_for(tiny_config, copy_run.parent, "tiny", *asked), progress=False)
        assert load_checkpoint(copy_run)["epoch"] == 2


# ------------------------------------------------------------------ fp16 loss scaling


def test_fp16_grad_scaler_state_is_saved_and_restored(tiny_config, tmp_path):
    cfg = cfg_for(tiny_config, tmp_path, "fp16", "train.amp=fp16", "eval.modes=[all]")
    train(cfg, progress=False)
    saved = load_checkpoint(tmp_path / "fp16")["scaler"]
    fresh = torch.amp.GradScaler("cpu")
    fresh.scale(torch.ones(()))  # initialise its lazily created state
    assert saved and saved != fresh.state_dict()  # two steps moved it
    resumed = Trainer(
        cfg_for(
            tiny_config, tmp_path, "fp16", "train.amp=fp16", f"train.resume={tmp_path / 'fp16'}"
        )
    )
    try:
        resumed.setup()
        assert resumed.scaler.state_dict() == saved
    finally:
        if resumed.lock is not None:
            resumed.lock.release()
        trainer_mod._close_logging()
