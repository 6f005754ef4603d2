"""The csetgraph command line: dispatch, help with examples, lazy imports, run arguments."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import pytest

from csetgraph import __version__
from csetgraph.cli import COMMANDS, available, main
from csetgraph.deploy.embedder import split_run_argument
from csetgraph.errors import ConfigError

DEPLOY = ("export", "index", "search", "serve")


def test_help_lists_every_present_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = available()
    assert set(DEPLOY) | {"train"} <= set(names)
    for name in names:
        assert f"  {name} " in out and COMMANDS[name] in out


def test_help_imports_no_heavy_package():
    code = (
        "import sys; from csetgraph.cli import main; main(['--help']); "
        "heavy = [m for m in ('torch', 'faiss', 'fastapi', 'onnxruntime') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_help_with_examples_and_debug(name, capsys):
    assert COMMANDS
    if name not in available():
        pytest.skip(f"csetgraph.commands.{name} is not in the tree yet (another helper's part)")
    module = importlib.import_module(f"csetgraph.commands.{name}")
    assert module.__doc__ and f"csetgraph {name}" in module.__doc__  # examples in the docstring
    try:  # argparse exits after printing the help; a command may also return 0
        status = main([name, "--help"])
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 0
    out = capsys.readouterr().out
    assert out.count(f"csetgraph {name}") >= 2  # the usage line and at least one example
    assert "--debug" in out


def test_unknown_command_and_version(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'frobnicate'" in err[0] and "train" in err[0]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"csetgraph {__version__}"


def test_python_dash_m_and_console_script_are_the_same_entry():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [e.value for e in scripts if e.name == "csetgraph"] == ["csetgraph.cli:main"]
    out = subprocess.run(
        [sys.executable, "-m", "csetgraph", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"csetgraph {__version__}"


def test_dispatch_passes_arguments_and_exit_status(capsys, tmp_path):
    # A user error inside a deployment command: exit 2 and one line, through the dispatcher.
    assert main(["search", str(tmp_path), "q.jpg", "--modality", "ir"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("csetgraph search: error:")
    with pytest.raises(Exception, match="not a gallery index"):
        main(["search", str(tmp_path), "q.jpg", "--modality", "ir", "--debug"])


def test_run_and_overrides_in_any_order(tmp_path):
    assert split_run_argument(["runs/a", "data.root=/d"]) == ("runs/a", ["data.root=/d"])
    assert split_run_argument(["data.root=/d", "runs/a", "x.y=1"]) == (
        "runs/a",
        ["data.root=/d", "x.y=1"],
    )
    odd = tmp_path / "lr=3e-4"  # a run folder whose name holds '=' still counts as the run
    odd.mkdir()
    assert split_run_argument([str(odd), "a.b=1"]) == (str(odd), ["a.b=1"])
    with pytest.raises(ConfigError, match="expected one run"):
        split_run_argument(["a.b=1"])
    with pytest.raises(ConfigError, match="expected one run"):
        split_run_argument(["runs/a", "runs/b"])
