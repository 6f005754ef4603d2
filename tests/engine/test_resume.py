"""Resume after SIGKILL, atomic checkpoints, clear errors for bad checkpoints, non-finite loss."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csetgraph.config import ConfigError, load_config
from csetgraph.engine import NonFiniteLossError, atomic_save, load_checkpoint, train
from csetgraph.engine import trainer as trainer_mod
from csetgraph.engine.training_state import load_model_state
from csetgraph.errors import CheckpointError
from csetgraph.losses import build_criterion

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def overrides(tiny_config, tmp_path):
    """``overrides(name, epochs)``: the shared tiny config, 3 steps per epoch, one trial."""

    def make(name, epochs=3):
        extra = [f"train.epochs={epochs}", "train.max_steps_per_epoch=3", "eval.trials=1"]
        return tiny_config(tmp_path, name, *extra, "eval.modes=[all]")

    return make


def final_weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights(overrides, tmp_path):
    train(load_config(None, overrides("straight")), progress=False)
    reference = final_weights(tmp_path / "straight")

    # Same run in a subprocess, killed with SIGKILL once the first epoch's checkpoint exists.
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), "--no-progress"]
    args += overrides("killed", epochs=3)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(tmp_path / "killed")["epoch"]
    assert done < 3, "the run finished before it could be killed; make it longer"

    cfg = load_config(None, [*overrides("killed"), f"train.resume={tmp_path / 'killed'}"])
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


def test_corrupt_and_foreign_checkpoints_are_clear_errors(overrides, tmp_path):
    train(load_config(None, overrides("a", epochs=1)), progress=False)
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    # another model configuration (MHGA off): refused by name, the run keeps its own config
    other = [
        *overrides("a", epochs=2),
        "model.mhga.enabled=false",
        f"train.resume={tmp_path / 'a'}",
    ]
    with pytest.raises(ConfigError, match=r"model\.mhga\.enabled: run has True, asked False"):
        train(load_config(None, other), progress=False)
    # weights of another model under the same name: the tensors are named
    with pytest.raises(CheckpointError, match=r"another model configuration.*unexpected"):
        load_model_state(torch.nn.Linear(2, 2), torch.load(ckpt, weights_only=True)["model"], "x")
    # a truncated file
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "a")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def _nan_after(calls: int):
    """A build_criterion whose loss turns NaN after ``calls`` good steps."""
    count = {"n": 0}

    def build(loss_cfg):
        real = build_criterion(loss_cfg)

        def criterion(out, pids, **kwargs):
            loss, *rest = real(out, pids, **kwargs)
            count["n"] += 1
            return (loss * float("nan"), *rest) if count["n"] > calls else (loss, *rest)

        return criterion

    return build


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(overrides, tmp_path, monkeypatch):
    # 2 epochs of 3 steps with the loss reading back every 2 steps: the NaN at step 5 (epoch 2)
    # is seen at the epoch-end read, before epoch 2's checkpoint could be written.
    cfg = load_config(None, [*overrides("nan", epochs=2), "train.log_every=2"])
    monkeypatch.setattr(trainer_mod, "build_criterion", _nan_after(4))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*last good checkpoint is .*last\.pt"):
        train(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "nan")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "run.lock").exists()
    # the run resumes from the good checkpoint
    monkeypatch.setattr(trainer_mod, "build_criterion", build_criterion)
    train(
        load_config(None, [*overrides("nan", epochs=2), f"train.resume={tmp_path / 'nan'}"]),
        progress=False,
    )
    assert load_checkpoint(tmp_path / "nan")["epoch"] == 2


def test_a_plain_w_prime_checkpoint_in_a_residual_model_names_the_switch():
    from csetgraph.models import CSET, EncoderOptions, SEOptions, TripletOptions

    def make(form):
        enc = EncoderOptions(img_size=(64, 32), embed_dim=32, depth=2, num_heads=2)
        se = SEOptions(direction="both", layers=(0,), ratio=0.25)
        return CSET(5, encoder=enc, se=se, triplet=TripletOptions(head_form=form))

    state = make("plain").state_dict()
    with pytest.raises(CheckpointError, match=r"tri_heads\.vis\..*head_form=plain"):
        load_model_state(make("residual"), state, "an old run")
    load_model_state(make("plain"), state, "the same form")  # and the same form loads
