"""``csetgraph inspect``: the report of a trained run, its verdicts, JSON, and user mistakes."""

from __future__ import annotations

import json
import shutil

import pytest

from csetgraph.cli import main as cli_main
from csetgraph.commands.inspect import main
from csetgraph.errors import EXIT_USER_ERROR, RunFolderError

PREFIX = "csetgraph inspect: error: "


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX)
    return lines[0]


def write_run(folder, epochs, static=None):
    """A run folder whose metrics.json holds the given per-epoch statistics."""
    folder.mkdir(parents=True, exist_ok=True)
    section = {
        "static": static or {"triplet_margin": 0.3, "triplet_feature": "heads", "num_classes": 8},
        "epochs": [{"epoch": i + 1, "stats": s} for i, s in enumerate(epochs)],
    }
    (folder / "metrics.json").write_text(json.dumps({"all": {}, "mechanisms": section}))
    return folder


SE_COPY = {
    "se/block2/i2v/tokens_per_image": 3.0,
    "se/block2/i2v/a_diagonal": 0.52,
    "se/block2/i2v/same_position": 0.97,
    "se/block2/i2v/mean_score": 0.8,
    "se/i2v/class_cosine": 0.992,
    "triplet/loss": 0.309,
    "triplet/active": 0.98,
    "triplet/pos_dist": 0.61,
    "triplet/neg_dist": 0.6,
}


def test_report_of_the_tiny_run(tiny_run, capsys):
    run = tiny_run["dir"]
    assert cli_main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    section = json.loads((run / "metrics.json").read_text())["mechanisms"]
    s = section["last"]
    assert f"mechanism health from {run / 'metrics.json'}" in out
    assert "epoch 1\n" in out  # a one-epoch run: no first-epoch column
    for head in ("\nSE\n", "\nCA\n", "\ntriplet: trains ", "\nMHGA\n"):
        assert head in out
    same = s["se/block0/i2v/same_position"]
    assert "block 0 i2v: same-position exchanges" in out and f"{100 * same:.1f}%" in out
    for mechanism in ("SE", "CA", "triplet", "MHGA"):
        level = next(v["level"] for v in section["verdicts"] if v["mechanism"] == mechanism)
        assert f"  {mechanism}: {level}: " in out


def test_verdicts_and_first_epoch_column(tmp_path, capsys):
    early = dict(
        SE_COPY,
        **{"se/block2/i2v/same_position": 0.4, "se/i2v/class_cosine": 0.9, "triplet/loss": 0.1},
    )
    run = write_run(tmp_path / "r", [early, SE_COPY])
    assert main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "epoch 2 (epoch 1 in the first column)" in out
    row = next(ln for ln in out.splitlines() if "same-position exchanges" in ln)
    assert row.split()[-2:] == ["40.0%", "97.0%"]
    assert (
        "SE: degenerate: i2v after block 2 (3 tokens per image): 97% of exchanges are "
        "same-position: the exchange is a positional copy" in out
    )
    assert "A's diagonal holds 0.52" in out
    assert "cosine 0.992 from the clean one" in out
    assert "triplet: degenerate: trains the W' heads" in out and "1.03x its margin" in out
    assert "CA:" not in out and "MHGA:" not in out  # nothing recorded, no verdict
    assert main([str(run), "--epoch", "1"]) == 0
    out = capsys.readouterr().out
    assert "SE: alive: i2v after block 2 (3 tokens per image): 40% same-position" in out


def test_json_output(tmp_path, capsys):
    run = write_run(tmp_path / "r", [SE_COPY])
    assert main([str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epoch"] == 1 and out["stats"] == SE_COPY
    levels = {v["mechanism"]: v["level"] for v in out["verdicts"]}
    assert levels == {"SE": "degenerate", "triplet": "degenerate"}


def test_unevaluated_run_reads_last_pt(tiny_run, tmp_path, capsys):
    run = tmp_path / "unevaluated"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run["dir"] / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    assert main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "last.pt (the run has not been evaluated yet)" in out and "\nSE\n" in out


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing", "no run folder"),
        (lambda p: p, "holds neither metrics.json nor checkpoints/last.pt"),
        (lambda p: (p / "metrics.json").write_text("{") and p, "is not valid JSON"),
        (
            lambda p: (p / "metrics.json").write_text(json.dumps({"all": {}})) and p,
            "records no mechanism health: the run was trained before",
        ),
        (lambda p: write_run(p, []), "records no mechanism health"),
    ],
)
def test_user_mistakes_are_one_line_and_status_2(tmp_path, capsys, make, words):
    assert main([str(make(tmp_path))]) == EXIT_USER_ERROR
    assert words in error_line(capsys)


def test_unrecorded_epoch_and_debug(tmp_path, capsys):
    run = write_run(tmp_path / "r", [SE_COPY, SE_COPY])
    assert main([str(run), "--epoch", "3"]) == EXIT_USER_ERROR
    assert "--epoch 3 was not recorded; this run recorded epochs 1, 2" in error_line(capsys)
    with pytest.raises(RunFolderError, match="no run folder"):
        main([str(tmp_path / "missing"), "--debug"])
