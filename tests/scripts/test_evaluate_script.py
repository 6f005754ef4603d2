"""scripts/evaluate.py end to end on the synthetic SYSU-MM01, RegDB and LLCM layouts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from csetgraph.config import config_to_dict, load_config, save_config
from csetgraph.data.synthetic import generate_llcm, generate_regdb
from csetgraph.data.transforms import build_test_transform
from csetgraph.evaluation.protocols import evaluate_dataset
from csetgraph.models import build_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "evaluate.py"
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def roots(tmp_path_factory, sysu_root):
    kw = dict(
        num_train_ids=4,
        num_val_ids=1,
        num_test_ids=4,
        images_per_camera=2,
        height=32,
        width=16,
        seed=0,
        progress=False,
    )
    return {
        "sysu_mm01": sysu_root,
        "regdb": generate_regdb(tmp_path_factory.mktemp("regdb"), **kw),
        "llcm": generate_llcm(tmp_path_factory.mktemp("llcm"), **kw),
    }


def _make_run(folder: Path, dataset: str, root: Path, *extra: str, seed: int = 0):
    """A run folder as training leaves it: config.yaml and checkpoints/last.pt."""
    cfg = load_config(
        None,
        [
            f"data.dataset={dataset}",
            f"data.root={root}",
            "data.height=64",
            "data.width=32",
            "data.num_workers=0",
            "model.backbone=vit_tiny_patch16_224",
            "model.embed_dim=32",
            "model.depth=1",
            "model.num_heads=2",
            "model.se.direction=none",  # the baseline: evaluation does not depend on switches
            "model.ca.enabled=false",
            "model.mhga.enabled=false",
            "eval.trials=2",
            "eval.batch_size=16",
            "train.device=cpu",
            *extra,
        ],
    )
    torch.manual_seed(seed)
    model = build_model(cfg.model, NUM_CLASSES, (cfg.data.height, cfg.data.width)).eval()
    (folder / "checkpoints").mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    torch.save(
        {
            "model": model.state_dict(),
            "num_classes": NUM_CLASSES,
            "epoch": 1,
            "config": json.dumps(config_to_dict(cfg)),
        },
        folder / "checkpoints" / "last.pt",
    )
    return cfg, model


def _direct(model, cfg, **kw):
    mean, std = model.vis_encoder.mean_std
    tf = build_test_transform(cfg.data.height, cfg.data.width, mean=mean, std=std)
    return evaluate_dataset(model, cfg, device="cpu", transform=tf, progress=False, **kw)


@pytest.mark.parametrize(
    "dataset,settings",
    [("sysu_mm01", ["all", "indoor"]), ("regdb", ["V2I", "I2V"]), ("llcm", ["I2V", "V2I"])],
)
def test_evaluates_a_run_folder_on_each_layout(script, roots, tmp_path, capsys, dataset, settings):
    run = tmp_path / "run"
    cfg, model = _make_run(run, dataset, roots[dataset])
    assert script.main(["--checkpoint", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "R-1" in out and "mINP" in out and "±" in out
    for name in settings:
        assert name in out
    report = json.loads((run / f"eval_{dataset}.json").read_text())
    assert report["dataset"] == dataset and report["split"] == "test"
    assert list(report["results"]) == settings
    # The loaded checkpoint gives the numbers of the model it was saved from.
    expected = _direct(model, cfg)
    for name in settings:
        assert report["results"][name]["mean"] == pytest.approx(expected[name]["mean"])
        trials = 1 if dataset == "regdb" else 2
        assert len(report["results"][name]["trials"]) == trials


def test_options_override_the_run_config(script, roots, tmp_path):
    run = tmp_path / "run"
    cfg, model = _make_run(run, "sysu_mm01", roots["sysu_mm01"])
    out = tmp_path / "out" / "sysu.json"
    args = [
        "--checkpoint",
        str(run / "checkpoints" / "last.pt"),
        "--mode",
        "indoor",
        "--trials",
        "3",
        "--flip",
        "--rerank",
        "--shots",
        "2",
        "--output",
        str(out),
        "--no-progress",
        "eval.batch_size=4",
    ]
    assert script.main(args) == 0
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["indoor"]
    assert len(report["results"]["indoor"]["trials"]) == 3
    assert report["settings"]["flip"] and report["settings"]["rerank"]
    cfg.eval.modes, cfg.eval.trials, cfg.eval.flip = ["indoor"], 3, True
    expected = _direct(model, cfg, shots=2, rerank=True)
    assert report["results"]["indoor"]["mean"] == pytest.approx(expected["indoor"]["mean"])
    val = tmp_path / "val.json"
    assert script.main(["--checkpoint", str(run), "--split", "val", "--output", str(val)]) == 0
    assert json.loads(val.read_text())["split"] == "val"


def test_regdb_runs_of_several_trials_are_averaged(script, roots, tmp_path):
    reports = []
    for trial in (1, 2):
        _make_run(tmp_path / f"t{trial}", "regdb", roots["regdb"], f"data.trial={trial}")
    out = tmp_path / "regdb.json"
    runs = [str(tmp_path / "t1"), str(tmp_path / "t2")]
    assert script.main(["--checkpoint", *runs, "--output", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["regdb_trials"] == [1, 2]
    for name in ("V2I", "I2V"):
        per_run = [r[name]["trials"][0] for r in report["per_run"]]
        reports.append(per_run)
        assert [r[name]["trial"] for r in report["per_run"]] == [1, 2]
        combined = report["results"][name]
        assert combined["trials"] == per_run
        for key in ("rank1", "mAP", "mINP"):
            values = [t[key] for t in per_run]
            assert combined["mean"][key] == pytest.approx(sum(values) / 2)
            assert combined["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2)


def test_checkpoint_without_config_file_and_best_pt(script, roots, tmp_path):
    run = tmp_path / "run"
    cfg, model = _make_run(run, "llcm", roots["llcm"])
    (run / "config.yaml").unlink()  # the config stored in the checkpoint is used
    torch.save({"model": model.state_dict(), "epoch": 1}, run / "checkpoints" / "best.pt")
    with pytest.raises(SystemExit):  # best.pt has no config: --config is needed
        script.main(["--checkpoint", str(run / "checkpoints" / "best.pt")])
    assert script.main(["--checkpoint", str(run), "--no-progress", "eval.trials=1"]) == 0
    assert len(json.loads((run / "eval_llcm.json").read_text())["results"]["I2V"]["trials"]) == 1
    save_config(cfg, tmp_path / "recipe.yaml")
    args = ["--checkpoint", str(run / "checkpoints" / "best.pt"), "--config"]
    assert script.main([*args, str(tmp_path / "recipe.yaml"), "--no-progress"]) == 0


def test_bad_input_gets_clear_errors(script, roots, tmp_path, capsys):
    run = tmp_path / "run"
    _make_run(run, "sysu_mm01", roots["sysu_mm01"])
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", str(tmp_path / "missing")])
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", str(run), "--dataset", "regdb"])
    assert "--root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", str(run), "--dataset", "regdb", "--root", str(tmp_path)])
    assert "RegDB layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", str(run), str(run), "--output", str(tmp_path / "x.json")])
    assert "only for RegDB" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", str(run), "model.depth=2"])
    assert "another model configuration" in capsys.readouterr().err
