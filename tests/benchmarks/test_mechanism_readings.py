"""The reading statistics of benchmarks/mechanism_readings.py against loop references."""

import importlib.util
import math
import sys
from pathlib import Path

import torch

from csetgraph.data.records import Record
from csetgraph.graph.similarity import intra_similarity

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location(
    "mechanism_readings", ROOT / "benchmarks" / "mechanism_readings.py"
)
bench = importlib.util.module_from_spec(SPEC)
sys.modules["mechanism_readings"] = bench
SPEC.loader.exec_module(bench)


def test_model_readings_are_the_library_ones_and_layernorm_is_by_hand():
    x = 3 * torch.randn(2, 5, 8, dtype=torch.float64)
    for reading in ("dot", "scaled", "cosine"):
        torch.testing.assert_close(bench.intra(x, reading), intra_similarity(x, 1.0, reading))
    z = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    want = torch.softmax(z @ z.transpose(1, 2) / math.sqrt(8), -1)
    torch.testing.assert_close(bench.intra(x, "layernorm"), want)


def test_triplet_space_matches_a_loop():
    torch.manual_seed(0)
    feat = torch.randn(8, 4, dtype=torch.float64)
    pids = torch.tensor([0, 1, 2, 3] * 2)
    mods = torch.tensor([0] * 4 + [1] * 4)
    f = feat / feat.norm(dim=1, keepdim=True)
    hinge, pos, neg = [], [], []
    for a in range(8):
        d = [float(((f[a] - f[j]) ** 2).sum()) for j in range(8)]
        p = max(d[j] for j in range(8) if pids[j] == pids[a] and mods[j] != mods[a])
        n = min(d[j] for j in range(8) if pids[j] != pids[a] and mods[j] != mods[a])
        hinge.append(max(p - n + 0.3, 0.0))
        pos.append(p)
        neg.append(n)
    got = bench.triplet_space(feat, pids, mods)
    assert math.isclose(got["loss"], sum(hinge) / 8, rel_tol=1e-9)
    assert math.isclose(got["active"], sum(h > 0 for h in hinge) / 8)
    assert math.isclose(got["hardest_pos"], sum(pos) / 8, rel_tol=1e-9)
    assert math.isclose(got["hardest_neg"], sum(neg) / 8, rel_tol=1e-9)


def test_mean_cosine_matches_a_loop():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    pairs = [
        float(x[i] @ x[j] / (x[i].norm() * x[j].norm()))
        for i in range(5)
        for j in range(5)
        if i != j
    ]
    assert abs(bench.mean_cosine(x) - sum(pairs) / len(pairs)) < 1e-6
    assert abs(bench.mean_cosine(torch.ones(4, 3)) - 1.0) < 1e-9  # one point: cosine 1


def _records() -> dict[str, list[Record]]:
    """Two identities: visible cameras 1 and 2 (2 and 1 images), infrared camera 3 (3 images);
    identity 9 has no infrared image. Paths name ``modality/pid/cam/number``."""
    vis = [(7, 1, 0), (7, 1, 1), (7, 2, 0), (5, 1, 0), (5, 2, 0), (9, 1, 0)]
    ir = [(7, 3, 0), (7, 3, 1), (7, 3, 2), (5, 3, 0)]
    return {
        m: [Record(f"{m}/{p}/{c}/{k}", p, c, m) for p, c, k in rows]
        for m, rows in (("vis", vis), ("ir", ir))
    }


def test_camera_pairing_takes_every_camera_pair_once_per_identity():
    got = [(v.path, i.path) for v, i in bench.pair_records(_records(), "cameras", 2)]
    # written out by hand: identity 5 first (sorted), camera pairs (1, 3) then (2, 3); the
    # c-th pair takes image c mod n of each camera
    assert got == [
        ("vis/5/1/0", "ir/5/3/0"),
        ("vis/5/2/0", "ir/5/3/0"),
        ("vis/7/1/0", "ir/7/3/0"),
        ("vis/7/2/0", "ir/7/3/1"),
    ]


def test_aligned_pairing_takes_the_first_images_in_file_order():
    got = [(v.path, i.path) for v, i in bench.pair_records(_records(), "aligned", 2)]
    assert got == [
        ("vis/5/1/0", "ir/5/3/0"),
        ("vis/7/1/0", "ir/7/3/0"),
        ("vis/7/1/1", "ir/7/3/1"),
    ]


def test_group_means_per_camera_pair():
    got = bench.group_means(torch.tensor([1.0, 2.0, 4.0, 8.0]), [(1, 3), (2, 3), (1, 3), (1, 6)])
    assert got == {"1-3": 2.5, "1-6": 8.0, "2-3": 2.0}


def _tiny_mhga_model(strengths):
    from csetgraph.models import CSET, EncoderOptions, MHGAOptions

    torch.manual_seed(0)
    encoder = EncoderOptions(
        backbone="vit_tiny_patch16_224", img_size=(64, 32), embed_dim=32, depth=2, num_heads=2
    )
    mhga = MHGAOptions(enabled=True, heads=2, strengths=strengths)
    return CSET(10, encoder=encoder, mhga=mhga).eval()


def test_mhga_attention_is_uniform_without_logits_and_restores_the_strengths():
    model = _tiny_mhga_model((1.0, 0.7, 0.3))
    with torch.no_grad():
        model.mhga.conv.att_src.zero_()
        model.mhga.conv.att_dst.zero_()
    _, branch = model.forward_features(torch.randn(3, 3, 64, 32), "ir", return_branch=True)
    got = bench.mhga_attention(model.mhga, branch, "ir")
    # 4 x 2 patches + the class token; by hand: each target's share of same / adjacent /
    # distant sources in the token sequence (|i - j| = 1 adjacent), averaged over targets.
    n = 9
    shares = [0.0, 0.0, 0.0]
    for i in range(n):
        for j in range(n):
            shares[0 if i == j else 1 if abs(i - j) == 1 else 2] += 1 / (n * n)
    for name in ("model", "equal"):
        for a, b in zip(got[name]["mass"], shares, strict=True):
            assert math.isclose(a, b, rel_tol=1e-5)
        assert math.isclose(got[name]["entropy_over_log_n"], 1.0, rel_tol=1e-5)
    torch.testing.assert_close(model.mhga.conv.strengths, torch.tensor([1.0, 0.7, 0.3]))


def test_mhga_attention_with_equal_strengths_does_not_depend_on_the_models():
    images = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    results = []
    for strengths in ((1.0, 0.7, 0.3), (1.0, 1.0, 1.0)):
        model = _tiny_mhga_model(strengths)  # same seed: the same weights
        _, branch = model.forward_features(images, "vis", return_branch=True)
        results.append(bench.mhga_attention(model.mhga, branch, "vis"))
    paper, equal = results
    assert paper["model"]["mass"] != equal["model"]["mass"]  # the strengths act
    for a, b in zip(paper["equal"]["mass"], equal["model"]["mass"], strict=True):
        assert math.isclose(a, b, rel_tol=1e-5)
