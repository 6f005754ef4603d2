"""The usage example of docs/mhga.md (the README section on MHGA) runs and prints True."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "mhga.md"


def test_docs_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/mhga.md lost its python example"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
    printed = capsys.readouterr().out.split()
    assert "True" in printed and "False" not in printed
