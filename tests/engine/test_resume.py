"""Resume after SIGKILL, atomic checkpoints, clear errors for bad checkpoints, non-finite loss."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine import NonFiniteLossError, atomic_save, load_checkpoint, train
from csetgraph.models.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(root, out_dir, name, epochs=3):
    return [
        f"data.root={root}",
        "data.height=32",
        "data.width=16",
        "data.num_ids_per_batch=2",
        "data.num_instances=2",
        "data.num_workers=0",
        "model.embed_dim=32",
        "model.depth=2",
        "model.num_heads=2",
        "model.se.direction=both",
        "model.se.layers=[0]",
        "model.ca.enabled=true",
        "model.ca.heads=2",
        "model.mhga.enabled=true",
        "model.mhga.heads=2",
        f"train.epochs={epochs}",
        "train.max_steps_per_epoch=3",
        "train.num_threads=1",
        f"train.output_dir={out_dir}",
        f"train.run_name={name}",
        "eval.trials=1",
        "eval.modes=[all]",
    ]


def final_weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights(sysu_root, tmp_path):
    train(load_config(None, tiny_overrides(sysu_root, tmp_path, "straight")), progress=False)
    reference = final_weights(tmp_path / "straight")

    # Same run in a subprocess, killed with SIGKILL once the first epoch's checkpoint exists.
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), "--no-progress"]
    args += tiny_overrides(sysu_root, tmp_path, "killed", epochs=3)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(tmp_path / "killed")["epoch"]
    assert done < 3, "the run finished before it could be killed; make it longer"

    cfg = load_config(
        None,
        [*tiny_overrides(sysu_root, tmp_path, "killed"), f"train.resume={tmp_path / 'killed'}"],
    )
    train(cfg, progress=False)
    resumed = final_weights(tmp_path / "killed")
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"model": {"w": torch.zeros(2)}, "bad": Unpicklable()}, path)
    torch.testing.assert_close(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_corrupt_and_foreign_checkpoints_are_clear_errors(sysu_root, tmp_path):
    train(load_config(None, tiny_overrides(sysu_root, tmp_path, "a", epochs=1)), progress=False)
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    # another model configuration: MHGA off
    other = [
        *tiny_overrides(sysu_root, tmp_path, "a", epochs=2),
        "model.mhga.enabled=false",
        f"train.resume={tmp_path / 'a'}",
    ]
    with pytest.raises(CheckpointError, match=r"another model configuration.*unexpected"):
        train(load_config(None, other), progress=False)
    # a truncated file
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "a")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(sysu_root, tmp_path):
    overrides = tiny_overrides(sysu_root, tmp_path, "nan", epochs=1)
    train(load_config(None, overrides), progress=False)
    good = final_weights(tmp_path / "nan")
    poisoned = [*overrides, "train.epochs=2", "loss.triplet_weight=.nan"]
    cfg = load_config(None, [*poisoned, f"train.resume={tmp_path / 'nan'}"])
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg, progress=False)
    after = final_weights(tmp_path / "nan")
    for key, value in good.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
