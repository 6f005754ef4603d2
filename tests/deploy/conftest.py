"""The session's tiny trained run, exported and indexed once for the deployment tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """``csetgraph export`` of the tiny run: the output folder."""
    from csetgraph.commands.export import main

    out = tmp_path_factory.mktemp("export")
    assert main([str(tiny_run["dir"]), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def vis_index(tiny_run, tmp_path_factory):
    """``csetgraph index`` of the tiny run's visible test images, calibrated on val: the folder."""
    from csetgraph.commands.index import main

    out = tmp_path_factory.mktemp("index") / "test-vis"
    argv = [str(tiny_run["dir"]), "--split", "test", "--modality", "vis", "--output", str(out)]
    assert main([*argv, "--calibrate", "--no-progress"]) == 0
    return out
