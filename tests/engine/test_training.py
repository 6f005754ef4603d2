import json

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine import train
from csetgraph.losses import CSETLoss
from csetgraph.models import CSET

TINY = dict(backbone="vit_tiny_patch16_224", img_size=(32, 16), embed_dim=32, depth=2, num_heads=2)


def test_a_few_steps_lower_the_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    model = CSET(4, patch_stride=None, drop_path_rate=0.0, **TINY)
    vis, ir = torch.randn(8, 3, 32, 16), torch.randn(8, 3, 32, 16)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] * 2)
    criterion = CSETLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss, terms = criterion(model(vis, ir), pids)
        first = first if first is not None else {k: float(v) for k, v in terms.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    _, last = criterion(model(vis, ir), pids)
    assert float(last["ce"]) < first["ce"]
    assert float(last["tri"]) < first["tri"]


def test_embedding_is_normalised_and_independent_of_the_batch():
    torch.manual_seed(0)
    model = CSET(4, **TINY).eval()
    x = torch.randn(5, 3, 32, 16)
    full = model.embed(x, "ir")
    torch.testing.assert_close(full.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(model.embed(x[2:3], "ir"), full[2:3], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="'vis' or 'ir'"):
        model.embed(x, "rgb")


def test_end_to_end_run_writes_config_checkpoint_and_metrics(sysu_root, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.root={sysu_root}",
            "data.height=32",
            "data.width=16",
            "data.num_ids_per_batch=2",
            "data.num_instances=2",
            "data.num_workers=0",
            "model.embed_dim=32",
            "model.depth=2",
            "model.num_heads=2",
            "model.se.layers=[0]",
            "model.ca.heads=2",
            "model.mhga.heads=2",
            "train.epochs=1",
            "train.max_steps_per_epoch=2",
            f"train.output_dir={tmp_path}",
            "train.run_name=run",
            "eval.trials=2",
        ],
    )
    out = train(cfg, progress=False)
    run = tmp_path / "run"
    assert out["run_dir"] == run
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert load_config(run / "config.yaml").model.embed_dim == 32
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"all", "indoor"}
    assert len(metrics["all"]["trials"]) == 2
    for key in ("rank1", "rank10", "mAP", "mINP"):
        assert 0.0 <= metrics["all"]["mean"][key] <= 1.0
    assert "epoch 1/1" in (run / "log.txt").read_text()
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1


def test_validation_selects_best_and_bf16_autocast_runs_on_cpu(sysu_root, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.root={sysu_root}",
            "data.height=32",
            "data.width=16",
            "data.num_ids_per_batch=2",
            "data.num_instances=2",
            "data.num_workers=0",
            "data.train_split=train",
            "model.embed_dim=32",
            "model.depth=2",
            "model.num_heads=2",
            "model.se.layers=[0]",
            "model.ca.heads=2",
            "model.mhga.heads=2",
            "train.epochs=2",
            "train.max_steps_per_epoch=1",
            "train.eval_every=1",
            "train.amp=bf16",
            f"train.output_dir={tmp_path}",
            "train.run_name=val",
            "eval.trials=1",
        ],
    )
    train(cfg, progress=False)
    run = tmp_path / "val"
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] in (1, 2)
    log = (run / "log.txt").read_text()
    assert log.count("val R-1") == 2
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["best"]["epoch"] == best["epoch"]
    assert last["best"]["mAP"] == max(last["best"]["mAP"], best["val"]["mAP"])
