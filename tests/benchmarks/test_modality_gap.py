"""benchmarks/modality_gap.py: the three-number report against a brute-force ranking."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from csetgraph.data.sysu_mm01 import all_records
from csetgraph.engine.runs import eval_transform
from csetgraph.evaluation.features import extract_features

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location(
    "modality_gap", ROOT / "benchmarks" / "modality_gap.py"
)
gap = importlib.util.module_from_spec(SPEC)
sys.modules["modality_gap"] = gap
SPEC.loader.exec_module(gap)


def _brute_force(q, g, q_pids, g_pids):
    """Rank-1 and mAP by a per-query loop over cosine distances."""
    q = torch.nn.functional.normalize(q, dim=1)
    g = torch.nn.functional.normalize(g, dim=1)
    dist = (1 - q @ g.T).numpy()
    hits, aps = [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind="stable")
        match = g_pids[order] == q_pids[i]
        hits.append(float(match[0]))
        ranks = np.flatnonzero(match) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return float(np.mean(hits)), float(np.mean(aps))


def test_report_matches_a_per_query_loop(tiny_run):
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    report = gap.modality_report(model, cfg, "cpu")
    assert list(report) == [name for name, *_ in gap.REPORT]
    records = all_records(cfg.data.root, "test")
    tf = eval_transform(model, cfg)
    for name, qm, qc, gm, gc in gap.REPORT:
        q = [r for r in records[qm] if r.camid == qc]
        g = [r for r in records[gm] if r.camid == gc]
        qf = extract_features(model, q, qm, transform=tf, progress=False)
        gf = extract_features(model, g, gm, transform=tf, progress=False)
        r1, mAP = _brute_force(qf, gf, np.array([r.pid for r in q]), np.array([r.pid for r in g]))
        assert report[name]["rank1"] == pytest.approx(r1)
        assert report[name]["mAP"] == pytest.approx(mAP)
