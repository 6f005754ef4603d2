"""Install metadata: one version, torch ranges with the exact pair in constraints.txt, and a
conda environment listing the same packages as pyproject.toml."""

import re
import sys
from pathlib import Path

import pytest
import yaml

try:  # Python 3.10 has no tomllib: the dev extra brings tomli there
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

import csetgraph

ROOT = Path(__file__).resolve().parents[1]
#: conda package names that differ from their PyPI names
CONDA_TO_PYPI = {"pytorch-scatter": "torch-scatter"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    specs = [line.split("#")[0].strip() for line in lines]
    return {_name(s): s for s in specs if s}


def test_environment_yml_matches_pyproject():
    project = _project()
    wanted = {_name(d) for d in project["dependencies"]}
    extras = project["optional-dependencies"].values()
    wanted |= {_name(d) for group in extras for d in group}
    wanted.discard("csetgraph")  # dev includes csetgraph[deploy]: a reference, not a package
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {_name(d) for d in dep["pip"]}
        elif _name(dep) not in ("python", "pip"):
            name = _name(dep.split("::")[-1])
            listed.add(CONDA_TO_PYPI.get(name, name))
    assert listed == wanted


def test_dev_extra_includes_deploy():
    extras = _project()["optional-dependencies"]
    assert "csetgraph[deploy]" in extras["dev"]
    assert {"faiss-cpu", "onnxruntime", "fastapi", "playwright"} <= {
        _name(d) for d in extras["deploy"]
    }
    # The core must train without any deploy package.
    core = {_name(d) for d in _project()["dependencies"]}
    assert not core & {_name(d) for d in extras["deploy"]}


def test_torch_is_a_range_and_constraints_pin_the_local_pair():
    deps = {_name(d): d for d in _project()["dependencies"]}
    assert deps["torch"] == "torch>=2.4" and deps["torchvision"] == "torchvision>=0.19"
    pins = _constraints()
    assert pins["torch"] == "torch==2.14.1" and pins["torchvision"] == "torchvision==0.29.1"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = {_name(d): d for dep in env["dependencies"] if isinstance(dep, dict) for d in dep["pip"]}
    assert pip["torch"] == pins["torch"] and pip["torchvision"] == pins["torchvision"]


def test_every_makefile_install_uses_the_constraints():
    text = (ROOT / "Makefile").read_text()
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs, "the Makefile installs nothing?"
    for line in installs:
        if "--upgrade pip" in line:
            continue
        assert "-c constraints.txt" in line, line
    recipes = [line for line in text.splitlines() if line.startswith("\t$(PIP_INSTALL)")]
    assert len(recipes) == 2  # the package and its dev extras


def test_one_version_string():
    text = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(text)
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "csetgraph.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", csetgraph.__version__)


def test_typed_marker_and_console_script_ship():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (ROOT / "csetgraph" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["csetgraph"]
    assert project["project"]["scripts"]["csetgraph"] == "csetgraph.cli:main"


@pytest.mark.parametrize("minor", [10, 11, 12])
def test_requires_python_admits_tested_versions(minor):
    spec = _project()["requires-python"]
    low = tuple(int(x) for x in spec.removeprefix(">=").split("."))
    assert (3, minor) >= low
    assert sys.version_info[:2] >= low


def test_readme_states_the_python_floor_of_pyproject():
    floor = _project()["requires-python"].removeprefix(">=")
    assert f"Python {floor}+" in (ROOT / "README.md").read_text()
