"""CUDA random states in checkpoints: only this process's GPU, so resumes survive fewer GPUs.

CUDA is replaced by a fake with a per-device state table: the checkpoint must hold the
pinned device's state alone, and restore it onto the current device, whatever count of GPUs
the saving machine had.
"""

from __future__ import annotations

import pytest
import torch

from csetgraph.engine import training_state as checkpoint


class FakeCuda:
    """``torch.cuda`` as far as RNG states go: ``count`` devices, one current."""

    def __init__(self, count: int, current: int):
        self.states = {i: torch.full((4,), i, dtype=torch.uint8) for i in range(count)}
        self.current = current

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: self.states[self.current].clone())
        monkeypatch.setattr(torch.cuda, "set_rng_state", self._set)

        def refuse_all(*_):
            raise AssertionError("all-device RNG calls break on a machine with fewer GPUs")

        monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse_all)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse_all)

    def _set(self, state, device="cuda"):
        self.states[self.current] = state.clone()


def test_only_the_pinned_device_state_is_saved_and_restored(monkeypatch):
    saving = FakeCuda(count=8, current=5)
    saving.install(monkeypatch)
    state = checkpoint.rng_state()
    assert torch.equal(state["cuda_device"], torch.full((4,), 5, dtype=torch.uint8))

    resuming = FakeCuda(count=1, current=0)  # a machine with one GPU
    resuming.install(monkeypatch)
    checkpoint.set_rng_state(state)
    assert torch.equal(resuming.states[0], torch.full((4,), 5, dtype=torch.uint8))


@pytest.mark.parametrize(("count", "current", "expected"), [(2, 1, 1), (1, 0, 0)])
def test_old_all_device_states_restore_the_current_device_only(
    monkeypatch, count, current, expected
):
    old = {**checkpoint.rng_state(), "cuda": [torch.full((4,), 10 + i) for i in range(2)]}
    fake = FakeCuda(count=count, current=current)
    fake.install(monkeypatch)
    checkpoint.set_rng_state(old)
    assert torch.equal(fake.states[current], torch.full((4,), 10 + expected))
