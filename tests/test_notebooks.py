"""Every notebook in notebooks/ is stored without outputs, runs top to bottom, and shows its
key outputs: each figure cell a PNG per figure, and the text each notebook is there to print
(the results notebook's metrics table)."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

#: Per notebook: a snippet of a cell's source -> text that cell must print.
KEY_OUTPUTS = {
    "results.ipynb": {
        "format_table(": ["setting", "R-1", "R-10", "mAP", "mINP", "all", "±"],
        "compute_ranked_lists(": ["query id", "@1"],
        "modality_distances(": ["intra_cross", "inter"],
    },
    "token_graphs.ipynb": {
        "token_graph_pair(": ["total", "(2N)^2"],
        "return_attention_weights=True": ["MHGA output:", "attention:"],
    },
}


def _figures(source: str) -> int:
    """Figures a cell draws: calls of the notebook's ``show(fig, name)`` helper (not its
    definition, not ``plt.show()``) and pyplot figures, each shown inline as one PNG."""
    helper = len(re.findall(r"(?<![\w.])show\(", source)) - source.count("def show(")
    return helper + source.count("plt.subplots(") + source.count("plt.figure(")


def test_every_notebook_is_listed():
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    assert {p.name for p in NOTEBOOKS} == set(KEY_OUTPUTS), (
        "list each notebook's key outputs in KEY_OUTPUTS"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """``executed(path)``: the notebook run top to bottom once per session (cached)."""
    cache = {}

    def run(path: Path):
        if path not in cache:
            nb = nbformat.read(path, as_version=4)
            cwd = tmp_path_factory.mktemp(path.stem)
            client = NotebookClient(
                nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
            )
            client.execute()  # the kernel inherits conftest's session TMPDIR
            cache[path] = nb
        return cache[path]

    return run


def _text(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def _pngs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: clear the outputs before committing"
            assert cell.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_key_outputs(path, executed):
    nb = executed(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    figure_cells = [c for c in code if _figures(c.source)]
    assert figure_cells, f"{path.name} draws no figure"
    for cell in figure_cells:
        assert _pngs(cell) == _figures(cell.source), cell.source[:120]
    for snippet, expected in KEY_OUTPUTS[path.name].items():
        cells = [c for c in code if snippet in c.source]
        assert len(cells) == 1, f"{path.name}: one cell should contain {snippet!r}"
        text = _text(cells[0])
        for word in expected:
            assert word in text, f"{path.name}: the {snippet!r} cell does not print {word!r}"
