"""benchmarks/gpu_check.py --smoke on the CPU: every section runs, and the JSON's numbers agree
with the batch, the generated folders and the files written, counted here independently."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = [
    "env", "cuda_tests", "data", "recipe", "loader", "loader_wait", "inference", "protocol",
    "onnx", "compile",
]  # fmt: skip
#: The smoke plan's batch: 2 ids x 2 images x 2 modalities.
SMOKE_BATCH_IMAGES = 8
RGB_CAMERAS, IR_CAMERAS = ("cam1", "cam2", "cam4", "cam5"), ("cam3", "cam6")


def run_check(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run on the CPU: ``{"report", "out", "work", "proc"}``."""
    base = tmp_path_factory.mktemp("gpu-check")
    out, work = base / "out", base / "work"
    proc = run_check("--smoke", "--device", "cpu", "--out", str(out), "--work", str(work))
    assert (out / "gpu_check.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    return {"report": report, "out": out, "work": work, "proc": proc}


def section(smoke, name) -> dict:
    entry = smoke["report"]["sections"][name]
    assert entry["status"] == "ok", entry
    return entry["result"]


def ids(root: Path, split: str) -> list[int]:
    text = (root / "exp" / f"{split}_id.txt").read_text().strip()
    return [int(v) for v in text.split(",") if v.strip()]


def images(root: Path, pids: list[int], cameras) -> int:
    """Image files of ``pids`` in ``cameras``, counted on disk."""
    return sum(
        len(list((root / cam / f"{pid:04d}").glob("*.jpg"))) for cam in cameras for pid in pids
    )


@pytest.mark.slow  # tens of seconds on an idle 2-core CPU: one worker runs all ten sections
def test_every_section_runs_and_the_outputs_are_written(smoke):
    report, proc = smoke["report"], smoke["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["schema"] == 1 and report["plan"] == "smoke"
    assert report["order"] == SECTIONS
    assert [report["sections"][s]["status"] for s in SECTIONS] == ["ok"] * len(SECTIONS)
    assert report["failures"] == []
    for name in SECTIONS:
        checks = report["sections"][name].get("checks", [])
        assert all(c["passed"] for c in checks), (name, checks)
    table = (smoke["out"] / "gpu_check.md").read_text()
    for name in SECTIONS:
        assert f"| {name} | ok |" in table
    assert table.strip() in proc.stdout  # the table is also printed
    assert (smoke["out"] / "cuda_tests.xml").is_file()
    assert section(smoke, "env")["device"] == "cpu"


def cuda_test_functions() -> list[str]:
    """Names of the test functions in tests/gpu marked ``cuda`` (by decorator or module)."""
    names = []
    for path in sorted((ROOT / "tests" / "gpu").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)
            and "cuda" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [ast.unparse(d) for d in node.decorator_list]
                if module_marked or "pytest.mark.cuda" in marks:
                    names.append(node.name)
    return names


@pytest.mark.slow
def test_the_cuda_tests_were_all_collected_and_skipped_with_their_reason(smoke):
    r = section(smoke, "cuda_tests")
    expected = cuda_test_functions()
    assert len(expected) >= 10
    run = {t["name"].split("::")[-1].split("[")[0] for t in r["tests"]}
    assert run == set(expected)
    assert r["collected"] == r["skipped"] == len(r["tests"]) >= len(expected)
    assert {t["message"] for t in r["tests"]} == {"needs a CUDA device"}
    assert r["failed"] == r["errors"] == r["passed"] == 0


@pytest.mark.slow
def test_the_data_and_protocol_counts_match_the_generated_folders(smoke):
    root = Path(section(smoke, "data")["root"])
    train_ids = ids(root, "train") + ids(root, "val")
    on_disk = images(root, train_ids, RGB_CAMERAS + IR_CAMERAS)
    assert section(smoke, "data")["train_images"] == on_disk > 0
    assert section(smoke, "loader")["images"] == on_disk
    protocol = section(smoke, "protocol")
    test_ids = ids(root, "test")
    assert protocol["trials"] == 10
    for mode, cameras in (("all", 4), ("indoor", 2)):
        m = protocol["modes"][mode]
        assert m["trials"] == 10
        assert m["num_query"] == images(root, test_ids, IR_CAMERAS)
        assert m["num_gallery"] == len(test_ids) * cameras  # single shot: one per id and camera
        ranks = [m[k] for k in ("rank1", "rank5", "rank10", "rank20")]
        assert 0 <= ranks[0] <= ranks[1] <= ranks[2] <= ranks[3] <= 1
        assert 0 < m["mAP"] <= 1


@pytest.mark.slow
def test_training_rates_agree_with_the_batch_and_the_timed_window(smoke):
    r = section(smoke, "recipe")
    runs = r["runs"]
    variants = ("baseline", "cset_every_block", "cset_last_quarter")
    assert set(runs) == {f"{v}/{p}" for v in variants for p in ("bf16", "fp32")}
    assert r["config"]["se_layers"] == {
        "baseline": [], "cset_every_block": [0, 1], "cset_last_quarter": [1],
    }  # fmt: skip
    for key, run in runs.items():
        assert run["batch_images"] == SMOKE_BATCH_IMAGES, key
        images_per_step = run["images_per_s"] * run["window_s"] / run["steps"]
        assert images_per_step == pytest.approx(SMOKE_BATCH_IMAGES, rel=1e-9), key
        assert run["step_ms_min"] <= run["step_ms_median"] <= run["step_ms_max"], key
        assert run["finite"] and run["max_memory_allocated"] is None, key  # CPU: no CUDA peak
    assert runs["baseline/fp32"]["parameters"] < runs["cset_every_block/fp32"]["parameters"]
    derived = smoke["report"]["derived"]
    ratio = (
        runs["cset_every_block/bf16"]["step_ms_median"] / runs["baseline/bf16"]["step_ms_median"]
    )
    assert derived["cset_every_block/bf16 step x baseline"] == pytest.approx(ratio, abs=1e-4)
    compiled = section(smoke, "compile")
    assert compiled["backend"] == "eager"
    run = compiled["runs"]["baseline/bf16"]
    assert run["compile_s"] >= 0 and run["batch_images"] == SMOKE_BATCH_IMAGES


@pytest.mark.slow
def test_loader_and_inference_numbers_are_consistent(smoke):
    loader = section(smoke, "loader")["by_workers"]["0"]
    for path in ("tensor", "pil"):
        rounds = loader[path]["rounds"]
        assert len(rounds) == 2 and all(v > 0 for v in rounds)
        assert min(rounds) == loader[path]["min"] and max(rounds) == loader[path]["max"]
    ratios = [
        t / p for t, p in zip(loader["tensor"]["rounds"], loader["pil"]["rounds"], strict=True)
    ]
    assert loader["ratios"] == pytest.approx(ratios)
    wait = section(smoke, "loader_wait")["paths"]
    assert set(wait) == {"tensor", "pil"}
    for run in wait.values():
        assert 0 <= run["wait_s"] <= run["total_s"]
        assert run["wait_share"] == pytest.approx(run["wait_s"] / run["total_s"])
        steps = run["window_steps"]
        assert run["images_per_s_loader"] == pytest.approx(
            SMOKE_BATCH_IMAGES * steps / run["window_loader_s"]
        )
        assert run["images_per_s_memory"] == pytest.approx(
            SMOKE_BATCH_IMAGES * steps / run["window_memory_s"]
        )
    runs = section(smoke, "inference")["runs"]
    combos = {(r["model"].split(" ")[0], r["precision"], r["batch"]) for r in runs}
    assert combos == {(m, p, b) for m in ("cset", "baseline") for p in ("bf16", "fp32")
                      for b in (1, 4)}  # fmt: skip
    for r in runs:
        assert r["ms_per_image"] == pytest.approx(r["call_ms_median"] / r["batch"])
        assert r["images_per_s"] == pytest.approx(1e3 / r["ms_per_image"])


@pytest.mark.slow
def test_the_onnx_files_are_the_ones_reported(smoke):
    r = section(smoke, "onnx")
    folder = smoke["work"] / "onnx"
    pre = json.loads((folder / "preprocess.json").read_text())
    assert (pre["height"], pre["width"]) == (64, 32)
    assert set(r["modalities"]) == {"vis", "ir"}
    for modality, m in r["modalities"].items():
        assert m["file_bytes"] == (folder / f"embed_{modality}.onnx").stat().st_size
        assert m["vs_torch_cpu"] <= 1e-4
        assert m["vs_device_fp32"] <= 1e-4  # the "device" is the CPU here
        assert m["min_cos_bf16"] > 0.99


@pytest.mark.slow
def test_a_section_past_its_cap_is_stopped_and_the_others_still_report(tmp_path):
    out = tmp_path / "out"
    proc = run_check(
        "--smoke", "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "w"),
        "--sections", "env,recipe,protocol,onnx", "--section-cap", "onnx=1",
        "--section-cap", "recipe=1",
    )  # fmt: skip
    assert proc.returncode == 1
    report = json.loads((out / "gpu_check.json").read_text())
    statuses = {name: report["sections"][name]["status"] for name in report["order"]}
    # onnx cannot stop itself mid-export: it is killed; recipe sees its time run out and stops
    assert statuses == {"env": "ok", "onnx": "timeout", "protocol": "skipped",
                        "recipe": "incomplete"}  # fmt: skip
    assert "cap of 1 s" in report["sections"]["onnx"]["error"]
    assert "needs the data section" in report["sections"]["protocol"]["error"]
    assert report["sections"]["recipe"]["error"].startswith("out of time before: baseline/bf16")
    assert [f["section"] for f in report["failures"]] == ["recipe", "protocol", "onnx"]


def test_an_earlier_result_is_not_overwritten_without_the_flag(tmp_path):
    (tmp_path / "gpu_check.json").write_text("{}")
    proc = run_check("--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gpu_check: error: {tmp_path} already holds gpu_check.json; pass --overwrite to "
        "replace them, or choose another --out"
    ]
    assert (tmp_path / "gpu_check.json").read_text() == "{}"


def test_an_unknown_section_is_a_one_line_error(tmp_path):
    proc = run_check("--out", str(tmp_path), "--sections", "env,warp", timeout=120)
    assert proc.returncode == 2
    assert "unknown section(s) warp" in proc.stderr and "Traceback" not in proc.stderr
