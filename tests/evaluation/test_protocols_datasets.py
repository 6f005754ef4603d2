"""SYSU-MM01, RegDB and LLCM protocols end to end, with a model whose embeddings we control.

The fake model recognises each test image by its pixels: ``"onehot"`` embeds the image's
identity as a one-hot vector (perfect retrieval), ``"random"`` gives each image its own
random unit vector (chance level). The random case is checked against a per-query loop
written here from docs/evaluation.md and docs/metrics.md, with scikit-learn's average
precision.

The data trees are the session fixtures of tests/conftest.py (RegDB and LLCM with 12 test
ids, 3 images per camera).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from sklearn.metrics import average_precision_score

from csetgraph.config import Config, DataConfig, EvalConfig
from csetgraph.data import llcm, regdb, sysu_mm01
from csetgraph.data.records import DatasetLayoutError, load_image
from csetgraph.engine.trainer import evaluate_model
from csetgraph.evaluation.protocols import (
    evaluate_dataset,
    evaluate_llcm,
    evaluate_regdb,
    evaluate_sysu,
)

TRANSFORM = T.ToTensor()
DIM = 24


def _key(image: torch.Tensor) -> bytes:
    return hashlib.sha1(image.numpy().tobytes()).digest()


class FakeModel(torch.nn.Module):
    """``embed`` returns one-hot identity features or per-image random unit vectors."""

    def __init__(self, records, kind: str) -> None:
        super().__init__()
        self.kind = kind
        pids = sorted({r.pid for r in records})
        self.lookup = {_key(TRANSFORM(load_image(r.path))): pids.index(r.pid) for r in records}
        self.num_ids = len(pids)
        self.seen = {"vis": [], "ir": []}

    def feature(self, image: torch.Tensor) -> torch.Tensor:
        key = _key(image)
        if self.kind == "onehot":
            return torch.nn.functional.one_hot(torch.tensor(self.lookup[key]), DIM).float()
        rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
        return torch.from_numpy(rng.standard_normal(DIM)).float()

    def embed(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        self.seen[modality] += [_key(img) for img in images]
        feats = torch.stack([self.feature(img) for img in images])  # (B, D)
        return torch.nn.functional.normalize(feats, dim=1)


def _feats(model: FakeModel, records) -> np.ndarray:
    rows = [model.feature(TRANSFORM(load_image(r.path))) for r in records]
    return torch.nn.functional.normalize(torch.stack(rows), dim=1).numpy().astype(np.float64)


def _loop_reference(query, gallery, q_feat, g_feat, protocol, dist=None):
    """Rank-1 and mAP by a per-query loop (continuous random features: no ties).

    ``dist`` replaces the cosine distances of the features (re-ranked distances).
    """
    if dist is None:
        dist = 1.0 - q_feat @ g_feat.T
    hits, aps = [], []
    for i, q in enumerate(query):
        keep = []
        for j, g in enumerate(gallery):
            if protocol == "sysu" and q.camid == 3 and g.camid == 2:
                continue
            if protocol == "llcm" and g.pid == q.pid and g.camid == q.camid:
                continue
            keep.append(j)
        match = np.array([gallery[j].pid == q.pid for j in keep])
        if not match.any():
            continue
        order = np.argsort(dist[i, keep], kind="stable")
        hits.append(bool(match[order[0]]))  # dedup does not change the first identity
        aps.append(average_precision_score(match, -dist[i, keep]))
    return float(np.mean(hits)), float(np.mean(aps))


def _sysu_records(root):
    q, _ = sysu_mm01.test_split(root, "all", 0)
    _, g = sysu_mm01.test_split(root, "all", 0, shots=100)  # every visible test image
    return q + g


def _regdb_records(root, trial=1):
    vis, ir = regdb.test_records(root, trial)
    return vis + ir


def _llcm_records(root):
    return llcm.test_records(root, "vis") + llcm.test_records(root, "ir")


KW = dict(transform=TRANSFORM, batch_size=7, progress=False)


def test_onehot_features_give_perfect_retrieval(sysu_root, regdb_root, llcm_root):
    sysu = evaluate_sysu(FakeModel(_sysu_records(sysu_root), "onehot"), sysu_root, trials=3, **KW)
    assert list(sysu) == ["all", "indoor"]
    reg = evaluate_regdb(FakeModel(_regdb_records(regdb_root), "onehot"), regdb_root, **KW)
    assert list(reg) == ["v2i", "i2v"]
    ll = evaluate_llcm(FakeModel(_llcm_records(llcm_root), "onehot"), llcm_root, trials=3, **KW)
    assert list(ll) == ["i2v", "v2i"]
    for results in (sysu, reg, ll):
        for res in results.values():
            for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
                assert res["mean"][key] == pytest.approx(1.0)
                assert res["std"][key] == pytest.approx(0.0)
    assert reg["v2i"]["query"] == "vis" and reg["v2i"]["gallery"] == "ir"
    assert reg["i2v"]["trials"][0]["num_query"] == 12 * 3
    assert reg["i2v"]["trials"][0]["num_gallery"] == 12 * 3


def test_llcm_counts_queries_whose_only_matches_share_their_camera(llcm_root):
    res = evaluate_llcm(FakeModel(_llcm_records(llcm_root), "onehot"), llcm_root, trials=3, **KW)
    for name, q_mod in (("i2v", "ir"), ("v2i", "vis")):
        for trial, scores in enumerate(res[name]["trials"]):
            query, gallery = llcm.test_split(llcm_root, q_mod, trial)
            invalid = sum(
                not any(g.pid == q.pid and g.camid != q.camid for g in gallery) for q in query
            )
            assert scores["num_invalid_queries"] == invalid
            assert scores["num_query"] == len(query) and scores["num_gallery"] == len(gallery)


@pytest.mark.parametrize("dataset", ["sysu_mm01", "regdb", "llcm"])
def test_random_features_match_a_loop_reference(dataset, sysu_root, regdb_root, llcm_root):
    if dataset == "sysu_mm01":
        model = FakeModel(_sysu_records(sysu_root), "random")
        results = evaluate_sysu(model, sysu_root, trials=3, **KW)
        cases = [
            (name, trial, *sysu_mm01.test_split(sysu_root, name, trial), "sysu")
            for name in ("all", "indoor")
            for trial in range(3)
        ]
    elif dataset == "regdb":
        model = FakeModel(_regdb_records(regdb_root, 2), "random")
        results = evaluate_regdb(model, regdb_root, trial=2, **KW)
        cases = [
            (name, 0, *regdb.test_split(regdb_root, 2, name.lower()), "regdb")
            for name in ("v2i", "i2v")
        ]
    else:
        model = FakeModel(_llcm_records(llcm_root), "random")
        results = evaluate_llcm(model, llcm_root, trials=3, **KW)
        cases = [
            (name, trial, *llcm.test_split(llcm_root, q_mod, trial), "llcm")
            for name, q_mod in (("i2v", "ir"), ("v2i", "vis"))
            for trial in range(3)
        ]
    for name, trial, query, gallery, protocol in cases:
        rank1, m_ap = _loop_reference(
            query, gallery, _feats(model, query), _feats(model, gallery), protocol
        )
        scores = results[name]["trials"][trial]
        assert scores["rank1"] == pytest.approx(rank1)
        assert scores["mAP"] == pytest.approx(m_ap)
    if dataset != "sysu_mm01":  # 12 test ids: chance Rank-1 is about 1/12
        for res in results.values():
            assert res["mean"]["rank1"] < 0.4 and res["mean"]["mAP"] < 0.5


def test_each_image_is_embedded_once(sysu_root, regdb_root, llcm_root):
    model = FakeModel(_llcm_records(llcm_root), "random")
    evaluate_llcm(model, llcm_root, trials=4, **KW)
    for modality in ("vis", "ir"):
        # Every test image of the modality, each once, whatever the number of trials.
        assert len(model.seen[modality]) == len(llcm.test_records(llcm_root, modality))
        assert len(set(model.seen[modality])) == len(model.seen[modality])
    model = FakeModel(_regdb_records(regdb_root), "random")
    evaluate_regdb(model, regdb_root, **KW)
    assert len(model.seen["vis"]) == len(model.seen["ir"]) == 12 * 3
    model = FakeModel(_sysu_records(sysu_root), "random")
    evaluate_sysu(model, sysu_root, trials=5, **KW)
    query, _ = sysu_mm01.test_split(sysu_root, "all", 0)
    assert len(model.seen["ir"]) == len(query)  # once for both modes and all trials
    assert len(model.seen["vis"]) == len(set(model.seen["vis"]))  # each gallery image once


def test_dispatcher_reads_the_config(regdb_root, llcm_root):
    cfg = Config(
        data=DataConfig(dataset="regdb", root=str(regdb_root), trial=3, num_workers=0),
        eval=EvalConfig(trials=2, batch_size=5),
    )
    model = FakeModel(_regdb_records(regdb_root, 3), "onehot")
    res = evaluate_dataset(model, cfg, device="cpu", transform=TRANSFORM, progress=False)
    assert res["v2i"]["trial_numbers"] == [3] and res["v2i"]["mean"]["rank1"] == 1.0
    held = regdb.val_ids(regdb_root, 3)
    val = evaluate_dataset(
        FakeModel(regdb.train_records(regdb_root, 3, "val"), "onehot"),
        cfg,
        device="cpu",
        transform=TRANSFORM,
        split="val",
        progress=False,
    )
    assert val["i2v"]["trials"][0]["num_query"] == len(held) * 3
    with pytest.raises(ValueError, match="SYSU-MM01 options"):
        evaluate_dataset(model, cfg, device="cpu", transform=TRANSFORM, shots=10)
    cfg.data = DataConfig(dataset="llcm", root=str(llcm_root), num_workers=0)
    res = evaluate_dataset(
        FakeModel(_llcm_records(llcm_root), "onehot"),
        cfg,
        device="cpu",
        transform=TRANSFORM,
        progress=False,
    )
    assert len(res["i2v"]["trials"]) == 2


def test_training_loop_evaluation_goes_through_the_dispatcher(regdb_root):
    cfg = Config(
        data=DataConfig(
            dataset="regdb", root=str(regdb_root), trial=1, height=16, width=8, num_workers=0
        )
    )
    model = FakeModel([], "random")
    res = evaluate_model(model, cfg, "cpu", (0.5,) * 3, (0.5,) * 3, progress=False)
    assert list(res) == ["v2i", "i2v"] and res["v2i"]["protocol"] == "regdb"


@pytest.mark.parametrize("dataset", ["sysu_mm01", "regdb", "llcm"])
def test_rerank_option_ranks_the_reference_rerankings(
    dataset, sysu_root, regdb_root, llcm_root, reference_rerank
):
    # --rerank: each trial's cosine distances go through the community re-ranking function
    # (k1=20, k2=6, lambda=0.3), then the protocol; checked against the loop on those.
    if dataset == "sysu_mm01":
        model = FakeModel(_sysu_records(sysu_root), "random")
        results = evaluate_sysu(model, sysu_root, modes=("all",), trials=2, rerank=True, **KW)
        cases = [("all", t, *sysu_mm01.test_split(sysu_root, "all", t), "sysu") for t in (0, 1)]
    elif dataset == "regdb":
        model = FakeModel(_regdb_records(regdb_root), "random")
        results = evaluate_regdb(model, regdb_root, rerank=True, **KW)
        cases = [(n, 0, *regdb.test_split(regdb_root, 1, n), "regdb") for n in ("v2i", "i2v")]
    else:
        model = FakeModel(_llcm_records(llcm_root), "random")
        results = evaluate_llcm(model, llcm_root, trials=2, rerank=True, **KW)
        cases = [
            (n, t, *llcm.test_split(llcm_root, m, t), "llcm")
            for n, m in (("i2v", "ir"), ("v2i", "vis"))
            for t in (0, 1)
        ]
    assert cases
    for name, trial, query, gallery, protocol in cases:
        q, g = _feats(model, query), _feats(model, gallery)
        dist = reference_rerank(1.0 - q @ g.T, 1.0 - q @ q.T, 1.0 - g @ g.T)
        rank1, m_ap = _loop_reference(query, gallery, q, g, protocol, dist=dist)
        scores = results[name]["trials"][trial]
        assert scores["rank1"] == pytest.approx(rank1)
        assert scores["mAP"] == pytest.approx(m_ap, abs=1e-6)


def test_empty_sides_get_clear_errors(regdb_root, tmp_path):
    import shutil

    broken = tmp_path / "regdb"
    shutil.copytree(regdb_root, broken)
    (broken / "idx" / "test_thermal_1.txt").write_text("")
    model = FakeModel([], "random")
    with pytest.raises(DatasetLayoutError, match=r"test_thermal_1\.txt.*empty"):
        evaluate_regdb(model, broken, **KW)
    with pytest.raises(DatasetLayoutError, match="missing idx file"):
        evaluate_regdb(model, broken, trial=12, **KW)


def test_eval_values_are_checked_before_any_image_is_read(regdb_root):
    from csetgraph.errors import ConfigError

    model = FakeModel([], "random")
    bad = [
        (dict(metric="hamming"), "eval.metric must be one of cosine, euclidean"),
        (dict(amp="fp8"), "eval.amp must be one of auto, off, bf16, fp16"),
        (dict(modes=["outdoor"]), "eval.modes must list SYSU-MM01 search modes"),
        (dict(trials=0), "eval.trials must be >= 1"),
    ]
    assert bad
    for fields, message in bad:
        cfg = Config(
            data=DataConfig(dataset="regdb", root=str(regdb_root), num_workers=0),
            eval=EvalConfig(**fields),
        )
        with pytest.raises(ConfigError, match=message):
            evaluate_dataset(model, cfg, device="cpu", transform=TRANSFORM, progress=False)
        assert model.seen == {"vis": [], "ir": []}
