"""``csetgraph train``: exit status 2 and one stderr line per user mistake, --debug tracebacks,
Ctrl-C naming the last checkpoint, overrides anywhere on the line, resume by run folder."""

from __future__ import annotations

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
