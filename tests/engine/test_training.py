"""The training loop: a tiny end-to-end run, model selection on validation, the learning-rate
schedule as logged, and the optimiser's parameter groups."""

import dataclasses
import json

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine import train
from csetgraph.engine import trainer as trainer_mod
from csetgraph.engine.trainer import format_lr, param_groups
from csetgraph.losses import CSETLoss
from csetgraph.models import CSET, EncoderOptions
from csetgraph.visualization import read_scalars

TINY = EncoderOptions(
    backbone="vit_tiny_patch16_224", img_size=(32, 16), embed_dim=32, depth=2, num_heads=2
)


def test_a_few_steps_lower_the_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    model = CSET(4, encoder=dataclasses.replace(TINY, drop_path_rate=0.0))
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
    model = CSET(4, encoder=TINY).eval()
    x = torch.randn(5, 3, 32, 16)
    full = model.embed(x, "ir")
    torch.testing.assert_close(full.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(model.embed(x[2:3], "ir"), full[2:3], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"'vis', 'ir'|'vis' or 'ir'"):
        model.embed(x, "rgb")


def test_end_to_end_run_writes_config_checkpoint_and_metrics(tiny_run):
    run = tiny_run["dir"]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert not (run / "run.lock").exists()  # released at the end
    assert load_config(run / "config.yaml").model.embed_dim == 32
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"all", "indoor", "mechanisms"}
    assert len(metrics["all"]["trials"]) == 2
    for key in ("rank1", "rank10", "mAP", "mINP"):
        assert 0.0 <= metrics["all"]["mean"][key] <= 1.0
    assert "epoch 1/1" in (run / "log.txt").read_text()
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["version"] == trainer_mod.CHECKPOINT_VERSION


# ------------------------------------------------------------------ validation and best.pt

#: Scripted validation mAP per epoch: the best is epoch 2; epoch 3 ties it and must not win.
VAL_MAP = [0.20, 0.50, 0.50, 0.10]


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory, tiny_config):
    """4 epochs of 3 steps under bf16 autocast, validated every epoch with scripted metrics;
    every checkpoint write is recorded (a copy of each epoch's weights)."""
    mp = pytest.MonkeyPatch()
    real_eval, real_save = trainer_mod.evaluate_model, trainer_mod.atomic_save
    saved: dict[str, list] = {"last.pt": [], "best.pt": []}

    def scripted_eval(model, cfg, device, mean, std, *, split="test", progress=True):
        if split != "val":
            return real_eval(model, cfg, device, mean, std, split=split, progress=progress)
        epoch = len(saved["last.pt"])  # epochs finished before this validation
        m = {"rank1": VAL_MAP[epoch], "mAP": VAL_MAP[epoch], "mINP": 0.0}
        return {"all": {"mean": m}}

    def recording_save(obj, path):
        saved[path.name].append(
            {"epoch": obj["epoch"], "model": {k: v.clone() for k, v in obj["model"].items()}}
        )
        real_save(obj, path)

    mp.setattr(trainer_mod, "evaluate_model", scripted_eval)
    mp.setattr(trainer_mod, "atomic_save", recording_save)
    overrides = [
        "data.train_split=train",
        "train.epochs=4",
        "train.max_steps_per_epoch=3",
        "train.eval_every=1",
        "train.amp=bf16",
        "train.warmup_epochs=1",
        "train.step_size=2",
        "train.gamma=0.1",
        "train.lr=1e-3",
        "eval.trials=1",
        "eval.modes=[all]",
    ]
    out_dir = tmp_path_factory.mktemp("val")
    try:
        train(load_config(None, tiny_config(out_dir, "val", *overrides)), progress=False)
    finally:
        mp.undo()
    return out_dir / "val", saved


def test_best_checkpoint_holds_the_argmax_validation_epoch_ties_keep_the_earliest(validated_run):
    run, saved = validated_run
    # Reference: the first epoch whose score is the maximum (epochs count from 1).
    want = VAL_MAP.index(max(VAL_MAP)) + 1
    assert want == 2
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == want
    weights_of_epoch = {s["epoch"]: s["model"] for s in saved["last.pt"]}
    assert sorted(weights_of_epoch) == [1, 2, 3, 4]
    for key, value in weights_of_epoch[want].items():
        torch.testing.assert_close(best["model"][key], value, rtol=0, atol=0, msg=key)
    # Epoch 2's weights differ from the later ones, so the comparison above can fail.
    assert any(
        not torch.equal(weights_of_epoch[want][k], weights_of_epoch[4][k])
        for k in weights_of_epoch[4]
    )
    assert [s["epoch"] for s in saved["best.pt"]] == [1, 2]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["best"]["epoch"] == want and last["best"]["mAP"] == 0.5
    assert (run / "log.txt").read_text().count("val R-1") == 4


def test_logged_learning_rate_is_the_one_each_epoch_trained_with(validated_run):
    """Hand-worked: 3 steps per epoch, lr 1e-3, warm-up over epoch 1 (steps at 1/3, 2/3, 3/3 of
    the rate), StepLR every 2 epochs by 0.1: epoch 1 trains at 3.33e-4 .. 1e-3, epoch 2 at
    1e-3, epochs 3-4 at 1e-4."""
    run, _ = validated_run
    first = [1e-3 / 3, 1e-3, 1e-4, 1e-4]
    last = [1e-3, 1e-3, 1e-4, 1e-4]
    lines = [ln for ln in (run / "log.txt").read_text().splitlines() if " epoch " in ln]
    assert len(lines) == 4
    for line, a, b in zip(lines, first, last, strict=True):
        assert f"| {format_lr(a, b)} |" in line
    assert "| lr 1.00e-03 | from lr 3.33e-04 |" in lines[0]
    assert "| lr 1.00e-04 |" in lines[2] and "from lr" not in lines[2]
    tb = read_scalars(run, source="tensorboard")
    assert tb["train/lr"][0].tolist() == [1, 2, 3, 4]
    assert tb["train/lr"][1].tolist() == pytest.approx(last, rel=1e-6)
    assert tb["train/lr_first"][1].tolist() == pytest.approx(first, rel=1e-6)


# ------------------------------------------------------------------ parameter groups


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 3, 4))
        self.proj = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.frozen = torch.nn.Parameter(torch.zeros(4, 4), requires_grad=False)

    def no_weight_decay(self):
        return {"pos_embed"}


def test_param_groups_exclude_norms_biases_and_the_models_no_weight_decay_names():
    model = _Toy()
    groups = param_groups(model, 5e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    got = [(g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in groups]
    assert got == [
        (5e-4, ["proj.weight"]),
        (0.0, ["norm.bias", "norm.weight", "pos_embed", "proj.bias"]),
    ]
    # Without the hook, only the 1-D rule applies; the 3-D pos_embed is decayed.
    plain = torch.nn.ModuleDict({"proj": torch.nn.Linear(4, 4)})
    assert [len(g["params"]) for g in param_groups(plain, 1e-4)] == [1, 1]


def test_compile_wraps_the_model_and_the_loss_and_checkpoints_keep_plain_names(
    tiny_config, tmp_path, monkeypatch
):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(trainer_mod.torch, "compile", fake_compile)
    t = trainer_mod.Trainer(load_config(None, tiny_config(tmp_path, "c", "train.compile=true")))
    try:
        t.setup()
    finally:
        if t.lock is not None:
            t.lock.release()
        trainer_mod._close_logging()
    assert compiled == [t.model, t.criterion] and isinstance(t.model, CSET)
