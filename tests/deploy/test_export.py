"""ONNX export: the files ONNX Runtime runs agree with model.embed at another batch size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from csetgraph.data.records import load_image
from csetgraph.deploy.export import EXPORT_BATCH, OnnxEmbedder, read_preprocess
from csetgraph.engine.runs import eval_transform
from csetgraph.errors import IndexFolderError


@pytest.mark.parametrize("modality", ["vis", "ir"])
def test_onnx_runtime_matches_model_embed(exported, tiny_run, sysu_root, modality):
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    info, path = read_preprocess(exported, modality)
    assert info["files"][path.name] == {"modality": modality}
    # Real images prepared by the run's own evaluation transform, at a batch size (5) other
    # than the one traced at export.
    files = sorted(sysu_root.rglob("*.jpg"))[:5]
    assert len(files) == 5 != EXPORT_BATCH
    tf = eval_transform(model, cfg)
    images = torch.stack([tf(load_image(p)) for p in files])
    ours = model.embed(images, modality).numpy()
    theirs = OnnxEmbedder(path)(images.numpy())
    assert theirs.shape == ours.shape == (5, ours.shape[1])
    assert np.abs(theirs - ours).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    # Batch of one (a dynamic axis, not a traced constant).
    np.testing.assert_allclose(OnnxEmbedder(path)(images[:1].numpy()), ours[:1], atol=1e-4)


def test_preprocess_json_describes_the_evaluation_transform(exported, tiny_run):
    info = json.loads((exported / "preprocess.json").read_text())
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    mean, std = model.vis_encoder.mean_std
    assert (info["height"], info["width"]) == (cfg.data.height, cfg.data.width)
    np.testing.assert_allclose(info["mean"], cfg.data.mean or mean)
    np.testing.assert_allclose(info["std"], cfg.data.std or std)
    assert info["files"] == {
        "embed_vis.onnx": {"modality": "vis"},
        "embed_ir.onnx": {"modality": "ir"},
    }
    assert info["input"]["name"] == "images" and info["output"]["name"] == "embeddings"
    assert all(d <= 1e-4 for d in info["parity_max_abs_diff"].values())


def test_export_errors(tmp_path, capsys):
    from csetgraph.commands.export import main

    assert main([str(tmp_path / "no-run"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0]
    with pytest.raises(IndexFolderError, match="no ONNX export"):
        read_preprocess(tmp_path, "vis")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--output", str(tmp_path), "--format", "tflite"])


def test_preprocess_json_alone_reproduces_the_embedding(exported, tiny_run, tmp_path):
    """docs/deploy.md's recipe: PIL + numpy + ONNX Runtime, no csetgraph, no torchvision."""
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "q.jpg"
    Image.fromarray((rng.random((300, 150, 3)) * 255).astype("uint8")).save(path)
    info = json.loads((exported / "preprocess.json").read_text())
    img = Image.open(path).convert("RGB").resize((info["width"], info["height"]), Image.BILINEAR)
    x = (np.asarray(img, np.float32) / 255 - info["mean"]) / info["std"]  # (H, W, 3)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, H, W)
    emb = OnnxEmbedder(exported / "embed_ir.onnx")(x)
    model, cfg = tiny_run["model"], tiny_run["cfg"]
    ref = model.embed(eval_transform(model, cfg)(load_image(path))[None], "ir").numpy()
    assert np.abs(emb - ref).max() <= 1e-4
