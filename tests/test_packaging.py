"""The conda environment and the pip metadata must list the same packages."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: conda package names that differ from their PyPI names
CONDA_TO_PYPI = {"pytorch-scatter": "torch-scatter"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(d) for d in project["dependencies"]}
    wanted |= {_name(d) for group in project["optional-dependencies"].values() for d in group}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {_name(d) for d in dep["pip"]}
        elif _name(dep) not in ("python", "pip"):
            name = _name(dep.split("::")[-1])
            listed.add(CONDA_TO_PYPI.get(name, name))
    assert listed == wanted


def test_torch_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
