"""An index of the session's tiny run and the service over it, built once for these tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def served_index(tiny_run, tmp_path_factory):
    """``csetgraph index`` of the tiny run's visible test images, calibrated: the folder."""
    from csetgraph.commands.index import main

    out = tmp_path_factory.mktemp("served") / "test-vis"
    argv = [str(tiny_run["dir"]), "--split", "test", "--modality", "vis", "--output", str(out)]
    assert main([*argv, "--calibrate", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def searcher(served_index):
    from csetgraph.deploy.searcher import GallerySearcher

    return GallerySearcher.from_folder(served_index)


@pytest.fixture(scope="session")
def app(searcher):
    from csetgraph.serve import create_app, query_examples

    return create_app(searcher, query_examples(searcher, 12))
