"""scripts/pretrain_backbone.py: deterministic bytes, a disjoint set, modality-aware heads."""

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from csetgraph.config import SyntheticConfig
from csetgraph.models.encoder import ViTEncoder

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("pretrain", ROOT / "scripts" / "pretrain_backbone.py")
pretrain = importlib.util.module_from_spec(SPEC)
sys.modules["pretrain"] = pretrain  # dataclasses look their module up
SPEC.loader.exec_module(pretrain)

TINY = ["--num-ids", "6", "--images-per-camera", "1", "--epochs", "1", "--batch-size", "8"]


def _run(out: Path, *extra) -> str:
    """The script in a fresh process, as the documented command runs it; returns the sha256."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pretrain_backbone.py"), *TINY, *extra,
         "--out", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _run_here(out: Path, *extra) -> str:
    """The script's ``main`` in this process (no interpreter start-up), leaving the torch
    thread count and random state as they were; returns the sha256."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            assert pretrain.main([*TINY, *extra, "--out", str(out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_same_command_same_bytes_wherever_written(tmp_path):
    # A fresh process and this one, with the file in different folders: the same bytes.
    a = _run(tmp_path / "a.safetensors")
    b = _run_here(tmp_path / "sub" / "b.safetensors")
    assert a == b
    assert _run_here(tmp_path / "c.safetensors", "--seed", "1") != a


def test_output_loads_into_the_recipe_encoder(tmp_path):
    _run_here(tmp_path / "w.safetensors", "--objective", "vis-id")
    enc = ViTEncoder(
        "vit_tiny_patch16_224", img_size=(128, 64), embed_dim=128, depth=4, num_heads=4,
        pretrained=str(tmp_path / "w.safetensors"),
    )  # fmt: skip
    report = enc.pretrained_report
    assert report.matched == report.total and not report.missing and not report.unexpected


def test_pretraining_set_is_disjoint_from_the_default_benchmark():
    default = SyntheticConfig()
    assert pretrain.PRETRAIN_SEED != default.seed
    total = default.num_train_ids + default.num_val_ids + default.num_test_ids
    assert pretrain.FIRST_PID > total


def test_colour_heads_learn_from_visible_images_only():
    # An all-infrared batch: the colour heads must get no gradient, the material heads must.
    torch.manual_seed(0)
    net = pretrain.PretrainNet(5, 32, 16, attributes=True)
    net.encoder = ViTEncoder(
        "vit_tiny_patch16_224", img_size=(32, 16), embed_dim=128, depth=1, num_heads=2
    )
    data = pretrain.render_pretrain_set(3, 1, 32, 16, progress=False)
    ir = torch.nonzero(data.is_ir).squeeze(1)
    batch = pretrain._batch(data, ir, torch.Generator().manual_seed(0))
    logits, attr = net(batch["images"])
    loss, terms = pretrain.pretrain_loss(logits, attr, batch)
    loss.backward()
    assert "attr" in terms
    for name, (_, where) in pretrain.ATTRIBUTE_CLASSES.items():
        grad = net.attr_heads[name].weight.grad
        if where == "vis":
            assert grad is None or torch.count_nonzero(grad) == 0, name
        else:
            assert grad is not None and torch.count_nonzero(grad) > 0, name


def test_an_existing_output_is_refused_before_anything_is_rendered(tmp_path, capsys, monkeypatch):
    shipped = ROOT / "weights" / "synthetic_vit_tiny.safetensors"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    rendered = []
    monkeypatch.setattr(pretrain, "render_pretrain_set", lambda *a, **k: rendered.append(a))
    monkeypatch.chdir(ROOT)  # the default --out is relative to the project folder
    assert pretrain.main([*TINY, "--no-progress"]) == 2  # the default: the shipped weights
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pretrain_backbone: error: 'weights/synthetic_vit_tiny.safetensors' already exists "
        "(the shipped weights, by default); pass --overwrite to replace it, or write "
        "elsewhere with --out"
    ]
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"mine")
    assert pretrain.main([*TINY, "--out", str(mine), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert rendered == [] and mine.read_bytes() == b"mine"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    monkeypatch.undo()
    digest = _run_here(mine, "--overwrite")  # replaced on request ...
    assert digest == _run_here(tmp_path / "fresh.safetensors")  # ... with the same bytes
