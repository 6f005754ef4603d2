"""Shared fixtures: a small synthetic SYSU-MM01 tree generated once per test session."""

from __future__ import annotations

import tempfile

import pytest
import torch

from csetgraph.data.synthetic import generate_sysu_mm01


@pytest.fixture(autouse=True)
def _few_threads():
    # Tiny tensors: thread start-up costs more than it saves, and CI has two cores.
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_loader_cache(tmp_path_factory):
    """Training runs cache their decoded images (data.pipeline=tensor) in a session folder,
    never in the user's ~/.cache; subprocesses inherit the variable."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CSETGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("loader-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _private_tmpdir(tmp_path_factory):
    """What the suite puts in tempfile's folder (PyG's generated GATConv modules, the
    notebook kernels' figures, subprocesses' scratch files) lands in a session folder that
    pytest prunes, never in the machine's /tmp."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TMPDIR", folder)
        env.setattr(tempfile, "tempdir", folder)
        yield


@pytest.fixture(scope="session")
def sysu_root(tmp_path_factory):
    """A synthetic SYSU-MM01 tree: 6 train, 2 val, 4 test ids, 3 images per camera, 32x16."""
    root = tmp_path_factory.mktemp("sysu")
    return generate_sysu_mm01(
        root,
        num_train_ids=6,
        num_val_ids=2,
        num_test_ids=4,
        images_per_camera=3,
        height=32,
        width=16,
        seed=3,
        progress=False,
    )


@pytest.fixture(scope="session")
def regdb_root(tmp_path_factory):
    """A synthetic RegDB tree: 8 + 2 train, 12 test ids, 3 images per camera, 32x16, seed 5.

    12 test ids: chance-level retrieval (Rank-1 about 1/12) is far from perfect
    (tests/evaluation/test_protocols_datasets.py).
    """
    from csetgraph.data.synthetic import generate_regdb

    return generate_regdb(
        tmp_path_factory.mktemp("regdb"),
        num_train_ids=8,
        num_val_ids=2,
        num_test_ids=12,
        images_per_camera=3,
        height=32,
        width=16,
        seed=5,
        progress=False,
    )


@pytest.fixture(scope="session")
def llcm_root(tmp_path_factory):
    """A synthetic LLCM tree: 8 + 2 train, 12 test ids, 3 images per camera, 32x16, seed 2."""
    from csetgraph.data.synthetic import generate_llcm

    return generate_llcm(
        tmp_path_factory.mktemp("llcm"),
        num_train_ids=8,
        num_val_ids=2,
        num_test_ids=12,
        images_per_camera=3,
        height=32,
        width=16,
        seed=2,
        progress=False,
    )


@pytest.fixture(scope="session")
def roots(sysu_root, regdb_root, llcm_root):
    """The three session trees by data-set name (the keys of ``csetgraph.data.DATASETS``)."""
    return {"sysu_mm01": sysu_root, "regdb": regdb_root, "llcm": llcm_root}


#: The one tiny training config of the suite: a 2-block, 32-wide CSET with SE, CA and MHGA on
#: 32x16 images, 2 ids x 2 instances per batch, 2 steps of 1 epoch, 2 evaluation trials.
#: ``train.log_every=1`` keeps one TensorBoard loss point per step (tests compare them).
TINY_OVERRIDES = [
    "data.height=32",
    "data.width=16",
    "data.num_ids_per_batch=2",
    "data.num_instances=2",
    "data.num_workers=0",
    "model.pretrained=",  # random init: the shipped synthetic weights are 128 wide
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "model.se.direction=both",
    "model.se.layers=[0]",
    "model.se.ratio=0.5",  # 2 patches per image: exchange one
    "model.ca.enabled=true",
    "model.ca.heads=2",
    "model.mhga.enabled=true",
    "model.mhga.heads=2",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.num_threads=1",
    "train.log_every=1",
    "train.device=cpu",
    "eval.trials=2",
]


@pytest.fixture(scope="session")
def tiny_overrides():
    """:data:`TINY_OVERRIDES` for tests that build the tiny model without data (a copy)."""
    return list(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_config(sysu_root):
    """``tiny_config(out_dir, name, *extra)``: the tiny config (on ``sysu_root``) as overrides."""

    def make(out_dir, name: str, *extra: str) -> list[str]:
        where = [f"data.root={sysu_root}", f"train.output_dir={out_dir}", f"train.run_name={name}"]
        where.append("data.synthetic.enabled=false")  # read the fixture tree, never regenerate
        return [*where, *TINY_OVERRIDES, *extra]

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config):
    """One tiny run trained once per session: ``{"dir", "model", "cfg", "results"}``.

    ``model`` is the trained model as training left it (eval mode); treat everything as
    read-only, other tests share it.
    """
    from csetgraph.config import load_config
    from csetgraph.engine import train

    out = train(
        load_config(None, tiny_config(tmp_path_factory.mktemp("runs"), "tiny")), progress=False
    )
    cfg = load_config(out["run_dir"] / "config.yaml")
    return {
        "dir": out["run_dir"],
        "model": out["model"].eval(),
        "cfg": cfg,
        "results": out["results"],
    }
