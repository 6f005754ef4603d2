"""``csetgraph visualize``: every figure from the session's tiny run, overrides anywhere on the
line (never taken for a second checkpoint), exit status 2 and one stderr line per mistake."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from csetgraph.commands.visualize import main
from csetgraph.errors import EXIT_USER_ERROR, CheckpointError
from csetgraph.visualization import heatmap as heatmap_mod
from csetgraph.visualization import ranked as ranked_mod

ROOT = Path(__file__).resolve().parents[2]


def _png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        return img.size  # (width, height)


def error_line(capsys, figure: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"csetgraph visualize {figure}: error: ")
    return lines[0]


def test_writes_every_figure(tiny_run, tmp_path, capsys):
    run = str(tiny_run["dir"])
    out = {name: tmp_path / f"{name}.png" for name in ("ranked", "heatmap", "tsne", "curves")}
    cmds = [
        # an override between the two checkpoints stays an override
        ["ranked", "--checkpoint", run, "eval.metric=cosine", run, "--names", "a", "b",
         "--num-queries", "2", "--k", "2", "--dpi", "40", "--output", str(out["ranked"])],
        ["heatmap", "eval.batch_size=4", "--checkpoint", run, "--source", "mhga", "--num-ids",
         "1", "--dpi", "40", "--output", str(out["heatmap"])],
        ["tsne", "--checkpoint", run, "--max-ids", "2", "--dpi", "40",
         "--output", str(out["tsne"])],
        ["curves", "--run", run, "--dpi", "40", "--output", str(out["curves"])],
    ]  # fmt: skip
    assert cmds
    for cmd in cmds:
        assert main(cmd) == 0, cmd
    printed = capsys.readouterr().out
    for path in out.values():
        assert str(path) in printed
    assert _png_size(out["tsne"]) == (8 * 40, 260)  # figsize (8, 6.5) at 40 dpi
    assert _png_size(out["curves"]) == (12 * 40, 8 * 40)
    width = (heatmap_mod.LABEL_WIDTH + 2 * heatmap_mod.CELL_WIDTH) * 40
    assert abs(_png_size(out["heatmap"])[0] - width) <= 1
    assert _png_size(out["ranked"])[0] >= ranked_mod.MIN_COLUMNS * ranked_mod.CELL_WIDTH * 40 - 1
    assert "same identity visible-infrared" in printed
    assert not list(tmp_path.glob(".*.tmp*"))  # written atomically: no temporaries left


def test_an_override_after_checkpoint_is_applied(tiny_run, tmp_path, capsys):
    # Before: --checkpoint RUN key=value took key=value for a second checkpoint.
    missing = tmp_path / "moved-data"
    argv = ["tsne", "--checkpoint", str(tiny_run["dir"]), f"data.root={missing}"]
    assert main(argv) == EXIT_USER_ERROR
    assert str(missing) in error_line(capsys, "tsne")


def test_user_mistakes_exit_2_with_one_line(tiny_run, tmp_path, capsys):
    run = str(tiny_run["dir"])
    cases = [
        (["ranked", "--checkpoint", str(tmp_path / "missing")], "no checkpoint at"),
        (["curves", "--run", str(tmp_path / "nope")], "neither TensorBoard event files"),
        (["tsne", "--checkpoint", run, "model.depth=3"], "another model configuration"),
        (["ranked", "--checkpoint", run, run, run], "one or two runs"),
        (["ranked", "--checkpoint", run, "--names", "a", "b"], "one name per checkpoint"),
        (["heatmap", "--checkpoint", run, "--num-ids", "99"], "identities"),
        (["ranked", "--checkpoint", run, "--num-queries", "999"], "queries"),
        (["ranked", "--checkpoint", run, "--direction", "v2i"], "directions i2v"),
        (["tsne", "oops", "--checkpoint", run], "is not a dotted override"),
        (["tsne", "--checkpoint", run, "oops"], "no checkpoint at 'oops'"),
        (["tsne", "--checkpoint", run, "data.root=/nonexistent/x"], "/nonexistent/x"),
    ]
    assert cases
    for argv, message in cases:
        assert main(argv) == EXIT_USER_ERROR, argv
        assert message in error_line(capsys, argv[0]), argv


def test_parse_errors_and_help(tiny_run, capsys):
    assert main([]) == EXIT_USER_ERROR
    assert "name a figure first" in capsys.readouterr().err
    assert main(["pie"]) == EXIT_USER_ERROR
    assert "got 'pie'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "ranked" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["ranked", "--checkpoint", str(tiny_run["dir"]), "--k", "0"])
    assert exc.value.code == EXIT_USER_ERROR and "must be >= 1" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        main(["tsne", "--checkpoint", str(tmp_path / "missing"), "--debug"])


def test_script_is_a_shim_of_the_command():
    spec = importlib.util.spec_from_file_location("vis_script", ROOT / "scripts/visualize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is main


def test_an_output_without_an_image_suffix_is_refused_first(tiny_run, tmp_path, capsys):
    run = str(tiny_run["dir"])
    cases = [
        (str(tmp_path / "ranked"), "has no image suffix"),
        (str(tmp_path / "ranked.pngg"), "has the suffix .pngg, not an image format"),
        (str(tmp_path / "figs") + "/", "has no image suffix"),
    ]
    assert cases
    for output, message in cases:
        assert main(["ranked", "--checkpoint", run, "--output", output]) == EXIT_USER_ERROR
        line = error_line(capsys, "ranked")
        assert f"--output {output!r} {message}; end it with .png (or one of " in line
        assert ".pdf" in line and ".svg" in line
    # Refused before the run is read: a missing run is not what the message is about.
    argv = ["curves", "--run", str(tmp_path / "nope"), "--output", str(tmp_path / "c")]
    assert main(argv) == EXIT_USER_ERROR
    assert "has no image suffix" in error_line(capsys, "curves")
    assert not any(tmp_path.iterdir())
    # An upper-case or non-PNG suffix is written in that format.
    pdf = tmp_path / "curves.PDF"
    assert main(["curves", "--run", run, "--output", str(pdf)]) == 0
    assert pdf.read_bytes().startswith(b"%PDF")
