"""The figures' query and gallery sets equal the data readers' own, for every data set."""

from __future__ import annotations

import pytest

from csetgraph.config import Config, DataConfig
from csetgraph.data import llcm, regdb, sysu_mm01
from csetgraph.errors import ConfigError
from csetgraph.visualization import retrieval_set, split_images


def _cfg(dataset, root, trial=1):
    return Config(data=DataConfig(dataset=dataset, root=str(root), trial=trial))


def test_regdb_uses_the_runs_own_trial_whatever_the_figure_trial(roots):
    rs = retrieval_set(_cfg("regdb", roots["regdb"], trial=2), direction="v2i", trial=5)
    vis, ir = regdb.test_records(roots["regdb"], 2)
    assert (rs.query, rs.gallery) == (vis, ir)
    assert (rs.protocol, rs.query_modality, rs.gallery_modality) == ("regdb", "vis", "ir")
    assert rs.description == "RegDB v2i, trial 2"


def test_llcm_gallery_is_the_evaluations_draw(roots):
    rs = retrieval_set(_cfg("llcm", roots["llcm"]), direction="i2v", trial=3)
    assert rs.query == llcm.test_records(roots["llcm"], "ir")
    assert rs.gallery == llcm.sample_gallery(llcm.test_records(roots["llcm"], "vis"), 3)
    assert rs.protocol == "llcm"


def test_sysu_mode_and_direction(roots):
    rs = retrieval_set(_cfg("sysu_mm01", roots["sysu_mm01"]), mode="indoor", trial=1)
    assert (rs.query, rs.gallery) == sysu_mm01.test_split(roots["sysu_mm01"], "indoor", 1)
    assert rs.description == "SYSU-MM01 indoor-search, trial 1"
    with pytest.raises(ConfigError, match="directions i2v"):
        retrieval_set(_cfg("sysu_mm01", roots["sysu_mm01"]), direction="v2i")


def test_split_images_is_every_image_of_the_split(roots):
    images = split_images(_cfg("llcm", roots["llcm"]))
    assert images == {m: llcm.test_records(roots["llcm"], m) for m in ("vis", "ir")}
    sysu = split_images(_cfg("sysu_mm01", roots["sysu_mm01"]), "val")
    ids = set(sysu_mm01.read_ids(roots["sysu_mm01"], "val"))
    files = [p for p in roots["sysu_mm01"].glob("cam*/*/*") if int(p.parent.name) in ids]
    assert sorted(r.path for m in sysu.values() for r in m) == sorted(str(p) for p in files)
