"""``csetgraph export``: an existing export is never replaced without ``--overwrite``, and
options that cannot work are one line and exit status 2 before the run is loaded."""

from __future__ import annotations

import pytest

from csetgraph.commands.export import main
from csetgraph.deploy.export import onnx_name
from csetgraph.errors import EXIT_USER_ERROR


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csetgraph export: error: "), lines
    return lines[0]


def test_an_existing_export_is_replaced_only_with_overwrite(tiny_run, tmp_path, capsys):
    import onnx

    from csetgraph.commands.export import EXPORT_FILES

    assert set(EXPORT_FILES) == {onnx_name("vis"), onnx_name("ir"), "preprocess.json"}
    out = tmp_path / "export"
    out.mkdir()
    mine = {name: f"the user's {name}".encode() for name in ("embed_ir.onnx", "notes.txt")}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    assert main([str(tiny_run["dir"]), "--output", str(out)]) == EXIT_USER_ERROR
    assert error_line(capsys) == (
        f"csetgraph export: error: {str(out)!r} already holds an export (embed_ir.onnx); pass "
        "--overwrite to replace it, or choose another --output"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == mine
    assert main([str(tiny_run["dir"]), "--output", str(out), "--overwrite"]) == 0
    assert {p.name for p in out.iterdir()} == {*EXPORT_FILES, "notes.txt"}
    onnx.checker.check_model(onnx.load(out / "embed_ir.onnx"))  # the export, not the user's
    assert (out / "notes.txt").read_bytes() == mine["notes.txt"]  # not the exporter's


def test_an_output_that_is_a_file(tiny_run, tmp_path, capsys):
    afile = tmp_path / "model.onnx"
    afile.write_bytes(b"mine")
    assert main([str(tiny_run["dir"]), "--output", str(afile)]) == EXIT_USER_ERROR
    assert error_line(capsys) == (
        f"csetgraph export: error: --output {str(afile)!r} is a file; pass a folder for the export"
    )
    assert afile.read_bytes() == b"mine"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "abc"])
def test_a_tolerance_that_is_not_a_finite_non_negative_number(tiny_run, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny_run["dir"]), "--output", str(tmp_path / "x"), "--tolerance", value])
    assert exit_info.value.code == EXIT_USER_ERROR
    assert "argument --tolerance" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
