"""``csetgraph train``: exit status 2 and one stderr line per user mistake, --debug tracebacks,
Ctrl-C naming the last checkpoint, overrides anywhere on the line, resume by run folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csetgraph.commands.train import main
from csetgraph.engine import load_checkpoint
from csetgraph.engine import trainer as trainer_mod
from csetgraph.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, ConfigError
from csetgraph.losses import build_criterion

ROOT = Path(__file__).resolve().parents[2]


def error_line(capsys) -> str:
    """The command's one error line (the run's own log lines may come before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("csetgraph train: ")
    return lines[-1]


@pytest.fixture
def args(tiny_config, tmp_path):
    """``args(*extra)``: the command line of a tiny run named "cmd" under ``tmp_path``."""
    return lambda *extra: ["--no-progress", *tiny_config(tmp_path, "cmd", "eval.trials=1", *extra)]


def test_out_of_range_option_anywhere_on_the_line(args, tmp_path, capsys):
    recipe = str(ROOT / "configs" / "synthetic.yaml")
    line = [*args()[1:], "--config", recipe, "--no-progress", "train.epochs=0"]
    assert main(line) == EXIT_USER_ERROR
    assert error_line(capsys) == (
        "csetgraph train: error: train.epochs=0 is out of range: it must be >= 1"
    )
    assert not (tmp_path / "cmd").exists()


def test_unknown_key_and_bad_type(args, capsys):
    assert main(args("train.epoch=3")) == EXIT_USER_ERROR
    assert "unknown config key 'train.epoch'; valid keys here:" in error_line(capsys)
    assert main(args("train.lr=fast")) == EXIT_USER_ERROR
    assert "train.lr: expected a number, got 'fast'" in error_line(capsys)


def test_missing_data_set_folder(args, tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    assert main(args(f"data.root={missing}", "data.synthetic.enabled=false")) == EXIT_USER_ERROR
    line = error_line(capsys)
    assert str(missing) in line and "data.root" in line
    assert not (tmp_path / "cmd").exists()


def test_corrupt_image_is_named(args, sysu_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(sysu_root, data)
    images = sorted(p for p in data.rglob("*") if p.suffix in (".jpg", ".png"))
    assert images
    for image in images:  # every one, so the first batch meets one
        image.write_bytes(b"not an image")
    for workers in (0, 1):  # in a worker process too, the message stays one line
        extra = (f"data.root={data}", f"data.num_workers={workers}", f"train.run_name=w{workers}")
        assert main(args(*extra)) == EXIT_USER_ERROR
        line = error_line(capsys)
        assert line.startswith("csetgraph train: error: cannot read image ")
        assert f"'{data}" in line and "data.skip_corrupt" in line


def test_unusable_checkpoint(args, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    assert main(args(f"train.resume={junk}")) == EXIT_USER_ERROR
    assert "corrupt or not a csetgraph checkpoint" in error_line(capsys)


def test_non_finite_loss(args, monkeypatch, capsys):
    def nan_criterion(loss_cfg):
        real = build_criterion(loss_cfg)
        return lambda out, pids, **kw: (lambda lt: (lt[0] * float("nan"), *lt[1:]))(
            real(out, pids, **kw)
        )

    monkeypatch.setattr(trainer_mod, "build_criterion", nan_criterion)
    assert main(args()) == EXIT_USER_ERROR
    assert "the loss became non-finite by epoch 1" in error_line(capsys)
    with pytest.raises(trainer_mod.NonFiniteLossError):
        main([*args(), "train.run_name=cmd2", "--debug"])


def test_debug_shows_the_exception(args):
    with pytest.raises(ConfigError, match=r"train\.epochs=0 is out of range"):
        main(["--debug", *args("train.epochs=0")])


def test_ctrl_c_names_the_last_checkpoint_and_resume_needs_no_overrides(
    args, tmp_path, monkeypatch, capsys
):
    real_epoch = trainer_mod.Trainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_epoch", interrupted_in_epoch_2)
    assert main(args("train.epochs=2")) == EXIT_INTERRUPTED
    run = tmp_path / "cmd"
    assert error_line(capsys) == (
        f"csetgraph train: interrupted: the last checkpoint is {run / 'checkpoints' / 'last.pt'}; "
        f"resume with train.resume={run}"
    )
    monkeypatch.undo()
    # The run's own config comes from its checkpoint: no original overrides needed.
    assert main(["--no-progress", f"train.resume={run}"]) == 0
    assert load_checkpoint(run)["epoch"] == 2
    assert main(["--no-progress", f"train.resume={run}", "model.depth=3"]) == EXIT_USER_ERROR
    assert "model.depth: run has 2, asked 3" in error_line(capsys)


def test_a_run_name_in_use_is_refused(tiny_run, tiny_config, capsys):
    run = tiny_run["dir"]
    assert main(["--no-progress", *tiny_config(run.parent, run.name)]) == EXIT_USER_ERROR
    assert f"run folder {str(run)!r} already holds a run" in error_line(capsys)


def test_the_script_is_a_shim_with_the_same_exit_status():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "train.epochs=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_USER_ERROR
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "csetgraph train: error: train.epochs=0 is out of range: it must be >= 1"
    )


#: (override, start of the message): values that crashed with a traceback, some after the
#: run folder was written (issue 22); each must stop before anything is written.
REFUSED_UP_FRONT = [
    ("train.seed=-1", "train.seed=-1 is out of range: it must be >= 0"),
    ("train.num_threads=100000000", "train.num_threads=100000000 is out of range"),
    ("data.train_split=test", "data.train_split='test' is not a training split"),
    ("data.mean=[0.5, 0.5]", "data.mean=[0.5, 0.5] must be three finite numbers"),
    ("data.std=[0, 0, 0]", "data.std=[0.0, 0.0, 0.0]: every value must be > 0"),
    ("train.lr=.inf", "train.lr=inf is out of range: it must be a finite number > 0"),
    ("model.mhga.strengths=[1, 0.5]", "model.mhga.strengths=[1.0, 0.5] must be 3 finite"),
    ("model.num_heads=3", "model.num_heads=3 does not divide model.embed_dim=32"),
    # the fixture tree has 8 training ids (6 train + 2 val)
    ("data.num_ids_per_batch=9", "8 training identities have images of both modalities, "
     "fewer than num_ids_per_batch x processes = 9 x 1: lower data.num_ids_per_batch"),
]  # fmt: skip


def test_the_refused_up_front_list_is_not_empty():
    assert len(REFUSED_UP_FRONT) >= 9


@pytest.mark.parametrize(("override", "message"), REFUSED_UP_FRONT)
def test_unworkable_values_stop_before_anything_is_written(
    args, tmp_path, capsys, override, message
):
    assert main(args(override)) == EXIT_USER_ERROR
    assert error_line(capsys).startswith(f"csetgraph train: error: {message}")
    assert not (tmp_path / "cmd").exists()


def test_an_output_dir_that_is_a_file_or_read_only(args, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "runs.txt"
    afile.write_text("mine")
    assert main(args(f"train.output_dir={afile}")) == EXIT_USER_ERROR
    assert error_line(capsys) == (
        f"csetgraph train: error: train.output_dir cannot be created: {str(afile)!r} is a file, "
        "not a folder; point train.output_dir at a folder (it is created if missing)"
    )
    assert afile.read_text() == "mine"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere: report it unwritable, as for users
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if p == locked else real(p, m))
    assert main(args(f"train.output_dir={locked / 'deeper'}")) == EXIT_USER_ERROR
    assert error_line(capsys) == (
        f"csetgraph train: error: cannot write the run folder {str(locked / 'deeper' / 'cmd')!r}: "
        f"{str(locked)!r} is not writable; point train.output_dir at a folder you can write to"
    )
    locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_a_non_finite_loss_names_a_checkpoint_only_when_there_is_one(
    args, tmp_path, monkeypatch, capsys
):
    def nan_after(steps):
        def build(loss_cfg):
            real, calls = build_criterion(loss_cfg), []

            def criterion(out, pids, **kwargs):
                calls.append(1)
                loss, *rest = real(out, pids, **kwargs)
                return (loss * float("nan") if len(calls) > steps else loss, *rest)

            return criterion

        return build

    monkeypatch.setattr(trainer_mod, "build_criterion", nan_after(0))
    assert main(args("train.run_name=first")) == EXIT_USER_ERROR
    line = error_line(capsys)  # the very first step: no checkpoint exists
    assert "lower train.lr (now 0.00035), use train.amp=off, or check data.mean and data.std" in (
        line
    )
    assert line.endswith("; no checkpoint was written yet: start the run again")
    assert "last good checkpoint" not in line
    assert not (tmp_path / "first" / "checkpoints" / "last.pt").exists()
    # two steps per epoch, NaN from the third: epoch 1 wrote last.pt, epoch 2 stops
    monkeypatch.setattr(trainer_mod, "build_criterion", nan_after(2))
    assert main(args("train.run_name=second", "train.epochs=2")) == EXIT_USER_ERROR
    line = error_line(capsys)
    run = tmp_path / "second"
    assert (run / "checkpoints" / "last.pt").is_file()
    last = run / "checkpoints" / "last.pt"
    assert line.endswith(
        f"; the last good checkpoint is {last}: resume from it with train.resume={run}"
    )
