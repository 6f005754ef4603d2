"""csetgraph.nn holds layers for other people's PyG models: it must not import the project's
configuration (csetgraph.config), directly or by ``from csetgraph import config``."""

import ast
from pathlib import Path

import csetgraph.nn

NN = Path(csetgraph.nn.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nn_does_not_import_the_config():
    files = sorted(NN.rglob("*.py"))
    assert len(files) >= 3, files  # __init__, mhga, exchange at least
    offenders = {
        f.name: sorted(m for m in _imported_modules(f) if m.startswith("csetgraph.config"))
        for f in files
    }
    assert not any(offenders.values()), offenders


def test_the_check_sees_a_config_import(tmp_path):
    sample = tmp_path / "layer.py"
    sample.write_text("from csetgraph import config\nfrom csetgraph.config import X\n")
    assert {"csetgraph.config", "csetgraph.config.X"} <= _imported_modules(sample)


def test_paper_strengths_have_one_definition():
    from csetgraph import config
    from csetgraph.nn import mhga

    assert config.PAPER_STRENGTHS is mhga.PAPER_STRENGTHS == (1.0, 0.7, 0.3)
