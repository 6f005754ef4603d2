"""The weight average (``train.ema_decay``): the update rule, what a run saves, evaluates and
resumes with it."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from csetgraph.config import ConfigError, load_config
from csetgraph.engine import load_checkpoint, train
from csetgraph.engine.averaging import WeightAverage, build_weight_average
from csetgraph.engine.runs import load_run
from csetgraph.engine.trainer import Trainer


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def sgd_steps(model, n):
    """``n`` SGD steps on random data; yields after each."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        yield


def test_the_average_follows_torch_averaged_model_on_floats_and_copies_integers():
    model = small_model()
    ours = WeightAverage(model, 0.9)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in sgd_steps(model, 5):
        ours.update(model)
        ref.update_parameters(model)
    got, want = ours.module.state_dict(), ref.module.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(got[key], want[key], msg=key)
    assert got["1.num_batches_tracked"].item() == 5  # copied from the model, never averaged
    assert ours.updates == 5
    assert not any(p.requires_grad for p in ours.module.parameters())


def test_the_average_is_the_hand_computed_exponential_average():
    model = small_model()
    avg = WeightAverage(model, 0.8)
    seen = []
    for _ in sgd_steps(model, 4):
        avg.update(model)
        seen.append(model[0].weight.detach().clone())
    expected = seen[0]  # the first update copies
    for w in seen[1:]:
        expected = 0.8 * expected + 0.2 * w
    torch.testing.assert_close(avg.module[0].weight, expected)


def test_decay_zero_keeps_no_average_and_bad_decays_are_refused(tiny_overrides):
    assert build_weight_average(small_model(), 0.0) is None
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=r"train\.ema_decay"):
            load_config(None, [*tiny_overrides, f"train.ema_decay={bad}"])


def test_a_run_without_the_average_saves_none(tiny_run):
    assert "ema" not in load_checkpoint(tiny_run["dir"])


class RecordingTrainer(Trainer):
    """Keeps a copy of the training weights after every step."""

    def _step(self, batch):
        out = super()._step(batch)
        self.seen = getattr(self, "seen", [])
        self.seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return out


def test_a_run_evaluates_saves_and_reloads_the_average(tiny_config, tiny_run, tmp_path):
    cfg = load_config(None, tiny_config(tmp_path, "ema", "train.ema_decay=0.5", "eval.trials=1"))
    trainer = RecordingTrainer(cfg, progress=False)
    out = trainer.fit()
    ckpt = load_checkpoint(out["run_dir"])
    assert ckpt["ema_updates"] == len(trainer.seen) == 2
    key = "neck.bn.running_mean"  # a float buffer: averaged too
    for name in (key, "vis_encoder.vit.blocks.0.attn.qkv.weight"):
        expected = 0.5 * trainer.seen[0][name] + 0.5 * trainer.seen[1][name]
        torch.testing.assert_close(ckpt["ema"][name], expected, msg=name)
        torch.testing.assert_close(ckpt["model"][name], trainer.seen[1][name], msg=name)
        torch.testing.assert_close(out["model"].state_dict()[name], expected, msg=name)
    model, _ = load_run(out["run_dir"])
    torch.testing.assert_close(model.state_dict()[key], ckpt["ema"][key])
    plain = load_checkpoint(tiny_run["dir"])["model"]  # the same run without the average
    for name, value in plain.items():
        torch.testing.assert_close(ckpt["model"][name], value, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_resuming_continues_the_same_average(tiny_config, tmp_path):
    def cfg(name, *extra):
        extra = ("train.ema_decay=0.7", "train.epochs=2", "eval.trials=1", *extra)
        return load_config(None, tiny_config(tmp_path, name, *extra))

    train(cfg("straight"), progress=False)
    train(cfg("split", "train.epochs=1"), progress=False)
    train(cfg("split", f"train.resume={tmp_path / 'split'}"), progress=False)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert a["ema_updates"] == b["ema_updates"] == 4
    for name, value in a["ema"].items():
        torch.testing.assert_close(b["ema"][name], value, rtol=0, atol=0, msg=name)
