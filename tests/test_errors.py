"""Every error is one line: nothing a dependency prints comes before it."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_models_prints_no_warning_of_pyg():
    # PyG calls torch.jit.script when imported; PyTorch warns about it in two lines.
    code = "import csetgraph.nn, csetgraph.graph, csetgraph.models"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""
    # The filter is ours: without it the warning shows (the reference this test leans on).
    bare = "import torch_geometric"
    proc = subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True)
    assert "torch.jit.script` is deprecated" in proc.stderr


def test_a_command_error_is_the_only_line_on_stderr():
    argv = [sys.executable, "-m", "csetgraph", "train", "train.seed=-1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "csetgraph train: error: train.seed=-1 is out of range: it must be >= 0 and <= 4294967295"
    ]
