"""``csetgraph evaluate`` end to end on the synthetic SYSU-MM01, RegDB and LLCM layouts:
results against per-image loops, overrides anywhere on the line, exit status 2 and one stderr
line per user mistake, the data-set fingerprint warning."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from csetgraph.commands.evaluate import main
from csetgraph.config import config_to_dict, load_config, save_config
from csetgraph.data import dataset_fingerprint, sysu_mm01
from csetgraph.data.records import load_image
from csetgraph.data.transforms import build_test_transform
from csetgraph.errors import EXIT_USER_ERROR, CheckpointError
from csetgraph.evaluation import k_reciprocal_rerank, rank_metrics
from csetgraph.evaluation.protocols import evaluate_dataset
from csetgraph.models import build_model

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 5


def error_line(capsys) -> str:
    """The command's one error line on stderr (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csetgraph evaluate: error: ")
    return lines[0]


def make_run(folder: Path, dataset: str, root: Path, *extra: str, seed: int = 0):
    """A run folder as training leaves it: config.yaml, checkpoints/last.pt, fingerprint.json."""
    cfg = load_config(
        None,
        [
            f"data.dataset={dataset}",
            f"data.root={root}",
            "data.synthetic.enabled=false",
            "data.height=64",
            "data.width=32",
            "data.num_workers=0",
            "model.backbone=vit_tiny_patch16_224",
            "model.pretrained=",
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
    ckpt = {
        "model": model.state_dict(),
        "num_classes": NUM_CLASSES,
        "epoch": 1,
        "config": json.dumps(config_to_dict(cfg)),
    }
    torch.save(ckpt, folder / "checkpoints" / "last.pt")
    fp = dataset_fingerprint(root, dataset, cfg.data.trial).to_dict()
    (folder / "fingerprint.json").write_text(json.dumps({"train": fp}))
    return cfg, model


def transform_of(model, cfg):
    mean, std = model.vis_encoder.mean_std
    return build_test_transform(cfg.data.height, cfg.data.width, mean=mean, std=std)


@torch.no_grad()
def loop_features(model, cfg, records, flip=False) -> np.ndarray:
    """One image at a time: ``model.embed``, optionally averaged with the mirror image."""
    tf = transform_of(model, cfg)
    rows = []
    for r in records:
        x = tf(load_image(r.path))[None]
        f = model.embed(x, r.modality)
        if flip:
            f = torch.nn.functional.normalize(f + model.embed(torch.flip(x, dims=[3]), r.modality))
        rows.append(f[0].double().numpy())
    return np.stack(rows)


LAYOUTS = [("sysu_mm01", ["all", "indoor"]), ("regdb", ["v2i", "i2v"]), ("llcm", ["i2v", "v2i"])]


def test_layout_list_is_not_empty():
    assert len(LAYOUTS) == 3


@pytest.mark.parametrize(("dataset", "settings"), LAYOUTS)
def test_evaluates_a_run_folder_on_each_layout(roots, tmp_path, capsys, dataset, settings):
    run = tmp_path / "run"
    cfg, model = make_run(run, dataset, roots[dataset])
    assert main(["--checkpoint", str(run), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "R-1" in captured.out and "mINP" in captured.out and "±" in captured.out
    assert "warning" not in captured.err  # the data set is the one the run recorded
    report = json.loads((run / f"eval_{dataset}.json").read_text())
    assert report["dataset"] == dataset and report["split"] == "test"
    assert list(report["results"]) == settings
    assert report["data_fingerprints"] == [
        dataset_fingerprint(roots[dataset], dataset, cfg.data.trial).digest
    ]
    # The model rebuilt from the checkpoint gives the numbers of the model it was saved from.
    tf = transform_of(model, cfg)
    expected = evaluate_dataset(model, cfg, device="cpu", transform=tf, progress=False)
    for name in settings:
        assert report["results"][name]["mean"] == pytest.approx(expected[name]["mean"])
        assert len(report["results"][name]["trials"]) == (1 if dataset == "regdb" else 2)


def test_options_and_overrides_reach_the_protocol(roots, tmp_path):
    # --mode indoor --trials 3 --shots 2 --flip --rerank, and overrides before and after
    # the options: checked against per-image features, the data reader's galleries and the
    # (separately verified) re-ranking function and metrics.
    run = tmp_path / "run"
    cfg, model = make_run(run, "sysu_mm01", roots["sysu_mm01"])
    out = tmp_path / "out" / "sysu.json"
    args = [
        "eval.batch_size=4",
        "--checkpoint",
        str(run / "checkpoints" / "last.pt"),
        "eval.metric=cosine",  # right after --checkpoint: still an override
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
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["indoor"]
    assert report["settings"]["flip"] and report["settings"]["rerank"]
    assert report["settings"]["amp"] == "auto"  # fp32 on the CPU: the loop below is fp32
    trials = report["results"]["indoor"]["trials"]
    assert len(trials) == 3
    for t, scores in enumerate(trials):
        query, gallery = sysu_mm01.test_split(roots["sysu_mm01"], "indoor", t, shots=2)
        assert scores["num_gallery"] == len(gallery) == 4 * 2 * 2  # ids x cameras 1, 2 x shots
        q = loop_features(model, cfg, query, flip=True)
        g = loop_features(model, cfg, gallery, flip=True)
        dist = k_reciprocal_rerank(1 - q @ g.T, 1 - q @ q.T, 1 - g @ g.T)
        m = rank_metrics(
            dist,
            [r.pid for r in query],
            [r.pid for r in gallery],
            [r.camid for r in query],
            [r.camid for r in gallery],
            "sysu",
        )
        assert scores["rank1"] == pytest.approx(m.cmc[0], abs=1e-9)
        assert scores["mAP"] == pytest.approx(m.mAP, abs=1e-5)
    val = tmp_path / "val.json"
    assert main(["--checkpoint", str(run), "--split", "val", "--output", str(val)]) == 0
    assert json.loads(val.read_text())["split"] == "val"


def test_regdb_runs_of_several_trials_are_pooled(roots, tmp_path):
    for trial in (1, 2):
        make_run(tmp_path / f"t{trial}", "regdb", roots["regdb"], f"data.trial={trial}")
    out = tmp_path / "regdb.json"
    runs = [str(tmp_path / "t1"), str(tmp_path / "t2")]
    assert main(["--checkpoint", *runs, "--output", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["regdb_trials"] == [1, 2]
    for name in ("v2i", "i2v"):
        per_run = [r[name]["trials"][0] for r in report["per_run"]]
        assert [r[name]["trial_numbers"] for r in report["per_run"]] == [[1], [2]]
        combined = report["results"][name]
        assert combined["trials"] == per_run and combined["trial_numbers"] == [1, 2]
        for key in ("rank1", "mAP", "mINP"):
            values = [t[key] for t in per_run]
            assert combined["mean"][key] == pytest.approx(sum(values) / 2)
            assert combined["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2)


def test_checkpoint_without_config_file_and_best_pt(roots, tmp_path, capsys):
    run = tmp_path / "run"
    cfg, model = make_run(run, "llcm", roots["llcm"])
    (run / "config.yaml").unlink()  # the config stored in the checkpoint is used
    torch.save({"model": model.state_dict(), "epoch": 1}, run / "checkpoints" / "best.pt")
    best = str(run / "checkpoints" / "best.pt")
    assert main(["--checkpoint", best]) == EXIT_USER_ERROR  # no config anywhere: --config
    assert "--config" in error_line(capsys)
    assert main(["--checkpoint", str(run), "--no-progress", "eval.trials=1"]) == 0
    assert len(json.loads((run / "eval_llcm.json").read_text())["results"]["i2v"]["trials"]) == 1
    save_config(cfg, tmp_path / "recipe.yaml")
    recipe = ["--config", str(tmp_path / "recipe.yaml")]
    assert main(["--checkpoint", best, *recipe, "--overwrite"]) == 0  # eval_llcm.json again


@pytest.fixture
def sysu_run(roots, tmp_path):
    run = tmp_path / "run"
    make_run(run, "sysu_mm01", roots["sysu_mm01"])
    return run


def test_user_mistakes_exit_2_with_one_line(sysu_run, tmp_path, capsys):
    run = str(sysu_run)
    cases = [
        # missing run folder (checkpoint error)
        (["--checkpoint", str(tmp_path / "missing")], "no checkpoint at"),
        # config: an unknown key, a bad value
        (["--checkpoint", run, "eval.trails=3"], "unknown config key 'eval.trails'"),
        (["--checkpoint", run, "eval.metric=hamming"], "eval.metric"),
        # another data set without its folder
        (["--checkpoint", run, "--dataset", "regdb"], "pass --root"),
        # data layout: a folder that is not a RegDB tree
        (["--checkpoint", run, "--dataset", "regdb", "--root", str(tmp_path)], "RegDB"),
        # several checkpoints are for RegDB only
        (["--checkpoint", run, run, "--output", str(tmp_path / "x.json")], "only for RegDB"),
        # checkpoint of another model configuration
        (["--checkpoint", run, "model.depth=2"], "another model configuration"),
        # a stray positional that is not an override
        (["--checkpoint", run, "--no-progress", "extra_run"], "is not a dotted override"),
    ]
    assert cases
    for argv, message in cases:
        assert main(argv) == EXIT_USER_ERROR, argv
        assert message in error_line(capsys), argv


def test_out_of_range_options_are_refused_when_parsed(sysu_run, capsys):
    for option, value in (("--trials", "0"), ("--trial", "11"), ("--batch-size", "0")):
        with pytest.raises(SystemExit) as exc:
            main(["--checkpoint", str(sysu_run), option, value])
        assert exc.value.code == EXIT_USER_ERROR
        assert f"argument {option}" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        main(["--checkpoint", str(tmp_path / "missing"), "--debug"])


def test_warns_when_the_data_set_changed(roots, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(roots["sysu_mm01"], data)
    run = tmp_path / "run"
    make_run(run, "sysu_mm01", data, "eval.trials=1", "eval.modes=[all]")
    victim = sorted((data / "cam1").rglob("*.jpg"))[0]  # a visible test or train image
    victim.unlink()
    assert main(["--checkpoint", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: the data set at" in err and "differs from the one" in err
    assert "vis images" in err  # compare_fingerprints names what changed


def test_script_is_a_shim_of_the_command():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts/evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is main


def test_a_folder_that_cannot_be_fingerprinted_is_still_evaluated(roots, tmp_path, capsys):
    # Only the test split is needed to evaluate; the fingerprint reads every split.
    data = tmp_path / "data"
    shutil.copytree(roots["sysu_mm01"], data)
    run = tmp_path / "run"
    make_run(run, "sysu_mm01", data, "eval.trials=1", "eval.modes=[all]")
    (data / "exp" / "train_id.txt").unlink()
    assert main(["--checkpoint", str(run), "--no-progress"]) == 0
    assert "warning: data set not fingerprinted" in capsys.readouterr().err
    assert json.loads((run / "eval_sysu_mm01.json").read_text())["data_fingerprints"] == [None]


def test_an_existing_results_file_is_refused_unless_overwrite(sysu_run, tmp_path, capsys):
    metrics = sysu_run / "metrics.json"
    metrics.write_text('{"final": "the run\'s own numbers"}')
    for output in (metrics, None):  # the run's metrics.json, then the default file
        if output is None:
            output = sysu_run / "eval_sysu_mm01.json"
            output.write_text("earlier results")
        before = output.read_text()
        assert main(["--checkpoint", str(sysu_run), "--output", str(output)]) == EXIT_USER_ERROR
        assert error_line(capsys) == (
            f"csetgraph evaluate: error: {str(output)!r} already exists; pass --overwrite to "
            "replace it, or choose another --output"
        )
        assert output.read_text() == before
    assert main(["--checkpoint", str(sysu_run)]) == EXIT_USER_ERROR  # the default, implied
    assert "eval_sysu_mm01.json' already exists" in error_line(capsys)
    argv = ["--checkpoint", str(sysu_run), "--output", str(metrics), "--overwrite", "eval.trials=1"]
    assert main([*argv, "--no-progress"]) == 0
    assert json.loads(metrics.read_text())["settings"]["trials"] == 1
    capsys.readouterr()
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["--checkpoint", str(sysu_run), "--output", str(folder)]) == EXIT_USER_ERROR
    assert error_line(capsys) == (
        f"csetgraph evaluate: error: --output {str(folder)!r} is a folder; pass a file for the "
        f"results, e.g. {str(folder / 'results.json')!r}"
    )


def test_a_corrupt_image_read_by_a_loader_worker_is_one_line(roots, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(roots["sysu_mm01"], data)
    run = tmp_path / "run"
    make_run(run, "sysu_mm01", data, "eval.trials=1", "eval.modes=[all]")
    test_ids = sorted(int(x) for x in (data / "exp" / "test_id.txt").read_text().split(","))
    broken = sorted((data / "cam3" / f"{test_ids[0]:04d}").glob("*.jpg"))[0]  # an IR query
    broken.write_bytes(b"not an image")
    argv = ["--checkpoint", str(run), "--no-progress", "--num-workers", "1"]
    assert main(argv) == EXIT_USER_ERROR
    line = error_line(capsys)
    assert line.startswith(f"csetgraph evaluate: error: cannot read image {str(broken)!r} (")
    assert "DataLoader worker" not in line


def test_a_test_id_without_images_is_named(roots, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(roots["sysu_mm01"], data)
    run = tmp_path / "run"
    make_run(run, "sysu_mm01", data, "eval.trials=1", "eval.modes=[all]")
    ids = (data / "exp" / "test_id.txt").read_text().strip()
    (data / "exp" / "test_id.txt").write_text(f"{ids},999\n")  # listed, no folder anywhere
    assert main(["--checkpoint", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"warning: 1 test identities of {data} have no images (999)" in err
