"""Resume on a GPU: the checkpoint restores the GPU's random stream, and a resumed run ends
with the weights of the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from csetgraph.config import load_config
from csetgraph.engine import train
from csetgraph.engine import trainer as trainer_mod
from csetgraph.engine.training_state import rng_state, set_rng_state

pytestmark = pytest.mark.cuda


def test_the_rng_state_holds_and_restores_the_gpu_stream(cuda):
    torch.cuda.manual_seed(5)
    state = rng_state()
    assert "cuda_device" in state
    first = torch.randn(64, device=cuda)
    torch.randn(3, device=cuda)
    set_rng_state(state)
    assert torch.equal(torch.randn(64, device=cuda), first)


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    state = torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=True)["model"]
    return {k: v.float() for k, v in state.items() if v.is_floating_point()}


def mean_abs_diff(a, b) -> float:
    """Mean |a - b| over every weight (the same keys in both)."""
    assert a.keys() == b.keys()
    total = sum(float((a[k] - b[k]).abs().sum()) for k in a)
    return total / sum(v.numel() for v in a.values())


def test_a_resumed_run_on_the_gpu_ends_with_the_uninterrupted_weights(
    tiny_config, tmp_path, monkeypatch
):
    def cfg(name, epochs, *extra):
        overrides = [f"train.epochs={epochs}", "train.max_steps_per_epoch=3", "eval.trials=1"]
        overrides += ["eval.modes=[all]", "train.device=cuda", *extra]
        return load_config(None, tiny_config(tmp_path, name, *overrides))

    def resumed(name, perturb_cuda: bool):
        train(cfg(name, 1), progress=False)
        if perturb_cuda:  # restore everything but the GPU's stream (the control)

            def restore_but_cuda(state):
                set_rng_state(state)
                torch.cuda.manual_seed(12345)

            monkeypatch.setattr(trainer_mod, "set_rng_state", restore_but_cuda)
        train(cfg(name, 2, f"train.resume={tmp_path / name}"), progress=False)
        monkeypatch.undo()
        return final_weights(tmp_path / name)

    train(cfg("straight", 2), progress=False)
    train(cfg("again", 2), progress=False)
    straight = final_weights(tmp_path / "straight")
    # GPU kernels with atomic adds may round differently from run to run: measure that floor.
    floor = mean_abs_diff(final_weights(tmp_path / "again"), straight)
    tolerance = 3 * floor + 1e-6
    assert mean_abs_diff(resumed("resumed", False), straight) <= tolerance
    # The control: without the GPU's stream the dropout draws differ, and so do the weights.
    assert mean_abs_diff(resumed("control", True), straight) > 10 * tolerance
