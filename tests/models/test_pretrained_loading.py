import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from csetgraph.models import CheckpointError, ViTEncoder, filter_vit_checkpoint

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def _reference_vit(img_size):
    """A 'pretrained' ViT at another resolution, as ImageNet checkpoints are (square)."""
    torch.manual_seed(0)
    return ViTEncoder("vit_tiny_patch16_224", img_size=img_size, **TINY).vit


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_loads_with_resampled_positions(tmp_path, suffix):
    ref = _reference_vit((64, 64))  # a 4 x 4 grid
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}  # a DDP-wrapped save
    state["head.weight"] = torch.randn(10, 32)  # a classifier to be dropped
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)

    enc = ViTEncoder("vit_tiny_patch16_224", img_size=(128, 64), pretrained=str(path), **TINY)
    assert enc.grid_size == (8, 4)
    got = enc.vit.state_dict()
    for key, value in ref.state_dict().items():
        if key != "pos_embed":
            torch.testing.assert_close(got[key], value)
    # The positional grid is resampled from 4x4 to 8x4, the class token's entry kept as is.
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), [8, 4], [4, 4], num_prefix_tokens=1)
    torch.testing.assert_close(got["pos_embed"], expected)
    torch.testing.assert_close(got["pos_embed"][:, 0], ref.pos_embed[:, 0].detach())


def test_filter_is_pure():
    ref = _reference_vit((64, 64))
    target = ViTEncoder("vit_tiny_patch16_224", img_size=(128, 64), **TINY).vit
    state = ref.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    out = filter_vit_checkpoint(state, target)
    assert out["pos_embed"].shape == target.pos_embed.shape
    assert all(torch.equal(state[k], before[k]) for k in before)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    wide = ViTEncoder("vit_tiny_patch16_224", img_size=(64, 64), embed_dim=48, depth=2, num_heads=2)
    torch.save(wide.vit.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        ViTEncoder(
            "vit_tiny_patch16_224", img_size=(64, 32), pretrained=str(tmp_path / "wide.pth"), **TINY
        )
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ViTEncoder(
            "vit_tiny_patch16_224", img_size=(64, 32), pretrained=str(tmp_path / "junk.pth"), **TINY
        )
    with pytest.raises(CheckpointError, match="does not exist"):
        ViTEncoder(
            "vit_tiny_patch16_224", img_size=(64, 32), pretrained=str(tmp_path / "no.pth"), **TINY
        )


def test_pickled_objects_are_refused(tmp_path):
    # Any object outside torch's weights-only allow-list must be refused, not unpickled.
    torch.save(
        {"model": {"w": torch.zeros(1)}, "obj": argparse.Namespace(x=1)}, tmp_path / "evil.pth"
    )
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ViTEncoder(
            "vit_tiny_patch16_224", img_size=(64, 32), pretrained=str(tmp_path / "evil.pth"), **TINY
        )


def test_the_load_report_counts_matched_missing_and_unexpected(tmp_path, caplog):
    ref = _reference_vit((64, 64))
    state = dict(ref.state_dict())
    total = len(state)
    dropped = ["blocks.1.mlp.fc2.weight", "blocks.1.mlp.fc2.bias"]  # two tensors the file lacks
    for key in dropped:
        del state[key]
    state["extra.weight"] = torch.zeros(3)  # a tensor the encoder has no place for
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "part.safetensors"))
    with caplog.at_level("INFO", logger="csetgraph.models.checkpoint"):
        enc = ViTEncoder(
            "vit_tiny_patch16_224",
            img_size=(64, 32),
            pretrained=str(tmp_path / "part.safetensors"),
            **TINY,
        )
    report = enc.pretrained_report
    assert (report.total, report.matched) == (total, total - 2)
    assert sorted(report.missing) == sorted(dropped)
    assert report.unexpected == ("extra.weight",)
    assert f"{total - 2} of {total} encoder tensors matched, 2 missing, 1 unexpected" in caplog.text
    # every matched tensor was loaded (pos_embed resampled, compared elsewhere)
    got = enc.vit.state_dict()
    for key in state:
        if key in got and key != "pos_embed":
            torch.testing.assert_close(got[key], state[key])


def test_a_file_matching_under_half_of_the_encoder_is_refused_naming_missing_keys(tmp_path):
    ref = _reference_vit((64, 64))
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("blocks.")}
    blocks = [k for k in ref.state_dict() if k.startswith("blocks.")]
    assert len(state) < len(blocks)  # under half of the tensors survive
    torch.save(state, tmp_path / "stem.pth")
    with pytest.raises(CheckpointError, match=f"matches only {len(state)} of") as err:
        ViTEncoder(
            "vit_tiny_patch16_224", img_size=(64, 32), pretrained=str(tmp_path / "stem.pth"), **TINY
        )
    assert blocks[0] in str(err.value)
    assert ViTEncoder("vit_tiny_patch16_224", img_size=(64, 32), **TINY).pretrained_report is None


def test_shipped_relative_path_loads_from_any_working_folder(tmp_path, monkeypatch):
    from csetgraph.models.checkpoint import resolve_weights_path

    shipped = Path(__file__).resolve().parents[2] / "weights" / "synthetic_vit_tiny.safetensors"
    assert shipped.is_file()
    monkeypatch.chdir(tmp_path)  # a folder with no weights/ of its own
    assert resolve_weights_path("weights/synthetic_vit_tiny.safetensors") == shipped
    (tmp_path / "weights").mkdir()
    own = tmp_path / "weights" / "synthetic_vit_tiny.safetensors"
    own.write_bytes(b"x")  # the user's own file of that name wins
    assert resolve_weights_path("weights/synthetic_vit_tiny.safetensors").resolve() == own
