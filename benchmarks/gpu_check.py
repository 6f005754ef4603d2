#!/usr/bin/env python
"""The GPU check: one prepared run that trains, evaluates and exports on whatever device it finds.

    python benchmarks/gpu_check.py --out results/gpu --budget 420     # a GPU machine, 7 minutes
    python benchmarks/gpu_check.py --smoke --device cpu --out /tmp/gc   # tiny sizes, any CPU
    python benchmarks/gpu_check.py --device cpu --out results/cpu --budget 7200 \
        --caps-scale 20 --steps 3 --skip cuda_tests,compile            # the CPU side of the ratio

Sections, in priority order (each guarded: one that fails, crashes or runs out of time is
recorded and the rest still run):

``env``          torch, CUDA, the GPU, the packages, the TF32 switches.
``cuda_tests``   ``pytest -m cuda tests/gpu`` (skipped with their reason on a machine without
                 CUDA); the JUnit XML comes back beside the JSON.
``data``         a synthetic set in SYSU-MM01's layout (generated in the background while the
                 tests run), images 1.125x the training size so that the resize is real work.
``recipe``       the paper recipe (``configs/sysu_mm01.yaml``: ViT-S at 256x128, batch 64 =
                 8 ids x 4 images x 2 modalities, ``model.pretrained=`` empty) as training
                 steps on in-memory batches: the baseline, full CSET with SE after every block,
                 and the last-quarter variant, each in bf16 autocast and fp32: step time,
                 images/s, ``torch.cuda.max_memory_allocated``.
``loader``       training-loader images/s at the training size, tensor path against PIL path
                 (``benchmarks/bench_loader.py``'s rounds), for each worker count.
``loader_wait``  full CSET at the recipe's precision fed by each loader: the share of the step
                 spent waiting for data, and the images/s lost against in-memory batches.
``inference``    ``model.embed`` (clean stream + MHGA) ms/image at batch 1 and 128, bf16 and
                 fp32, for CSET and the baseline.
``protocol``     the SYSU-MM01 protocol end to end (features + 10 trials, all and indoor) on
                 the synthetic test split, and CPU/device feature parity.
``onnx``         ``export_onnx`` of both embedders and ONNX Runtime's embeddings against the
                 device model's (fp32 and bf16).
``compile``      ``torch.compile`` of full CSET and the baseline: compile time (the first
                 step) reported apart from the compiled step time; eager is ``recipe``.

Outputs in ``--out``: ``gpu_check.json`` (every number, each section's status, the failures),
``gpu_check.md`` (the same as tables), ``gpu_check.log`` (the sections' output) and
``cuda_tests.xml``. The JSON and the table are rewritten after every section, so a run cut
short still leaves what it measured.

How it runs: this process starts one worker process (``--worker``) that runs the sections in
order and writes each section's result (and partial results as it goes) into ``--work``.
This process watches the clock: a section past its time cap, or the run past ``--budget``,
is stopped (the worker is killed and a new one takes the next section); a worker that dies
(a crash in CUDA, say) costs only the section it was running.

Timings: CUDA timings wait for the device (``torch.cuda.synchronize``). ``step_ms_median``
is the median of steps timed one by one; ``images_per_s`` comes from a separate window of as
many steps timed as a whole (one wait at the end): ``batch_images * steps / window_s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.util
import itertools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: import this csetgraph
    sys.path.insert(0, str(ROOT))

from csetgraph.errors import ConfigError, run_command  # noqa: E402  (no torch import here)
from csetgraph.files import write_atomic  # noqa: E402

SCHEMA = 1
SECTIONS = (
    "env",
    "cuda_tests",
    "data",
    "recipe",
    "loader",
    "loader_wait",
    "inference",
    "protocol",
    "onnx",
    "compile",
)
#: Sections that read the synthetic data set.
NEEDS_DATA = ("loader", "loader_wait", "protocol")
CUDA_SKIP_REASON = "needs a CUDA device"
VAL_IDS = 2  # the recipe trains on train+val, as the published numbers
OUTPUT_FILES = ("gpu_check.json", "gpu_check.md")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of one run: the paper recipe (``FULL``) or a seconds-long CPU smoke run."""

    name: str
    overrides: tuple[str, ...]  # applied to configs/sysu_mm01.yaml
    height: int
    width: int
    ids: int  # P identities per batch
    instances: int  # K images per identity and modality
    num_classes: int
    warmup: int
    steps: int
    loader_batches: int
    loader_rounds: int
    loader_workers: tuple[int, ...]
    wait_steps: int
    infer_batches: tuple[int, ...]
    infer_reps: int
    trials: int
    eval_workers: int
    train_ids: int
    test_ids: int
    images_per_camera: int
    onnx_batch: int
    compile_variants: tuple[str, ...]
    caps: dict  # section -> hard cap, seconds

    @property
    def batch_images(self) -> int:
        return 2 * self.ids * self.instances


FULL = Plan(
    name="full",
    overrides=("model.pretrained=",),
    height=256,
    width=128,
    ids=8,
    instances=4,
    num_classes=395,  # SYSU-MM01 train+val identities: the classifier's real size
    warmup=3,
    steps=15,
    loader_batches=20,
    loader_rounds=5,
    loader_workers=(4, 8),
    wait_steps=20,
    infer_batches=(1, 128),
    infer_reps=30,
    trials=10,
    eval_workers=4,
    train_ids=40,
    test_ids=24,
    images_per_camera=3,
    onnx_batch=4,
    compile_variants=("cset_every_block", "baseline"),
    caps={
        "env": 60,
        "cuda_tests": 180,
        "data": 90,
        "recipe": 150,
        "loader": 90,
        "loader_wait": 90,
        "inference": 60,
        "protocol": 90,
        "onnx": 120,
        "compile": 240,
    },
)
SMOKE = Plan(
    name="smoke",
    overrides=(
        "model.pretrained=",
        "model.embed_dim=32",
        "model.depth=3",
        "model.num_heads=2",
        "model.se.layers=[0,1]",
        "model.se.ratio=0.25",
        "model.ca.heads=2",
        "model.mhga.heads=2",
    ),
    height=64,
    width=32,
    ids=2,
    instances=2,
    num_classes=8,
    warmup=1,
    steps=1,
    loader_batches=2,
    loader_rounds=2,
    loader_workers=(0,),
    wait_steps=2,
    infer_batches=(1, 4),
    infer_reps=2,
    trials=10,
    eval_workers=0,
    train_ids=4,
    test_ids=3,
    images_per_camera=2,
    onnx_batch=3,
    compile_variants=("baseline",),
    caps={s: 240 for s in SECTIONS},  # safety limits; on an idle CPU it runs in seconds
)


# ============================================================================ the parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="gpu_check_out", help="where the JSON and table go")
    parser.add_argument("--work", default="", help="scratch: data, caches, ONNX (default: temp)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--budget", type=float, default=0.0, help="seconds for the whole run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU run in seconds")
    parser.add_argument("--sections", default="", help="comma-separated subset, in order")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument(
        "--section-cap",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="override a section's time cap (repeatable)",
    )
    parser.add_argument(
        "--compile-backend",
        default="",
        help="torch.compile backend (default: inductor; smoke: eager)",
    )
    parser.add_argument(
        "--caps-scale",
        type=float,
        default=1.0,
        help="multiply every section's time cap (a slow machine: the CPU run)",
    )
    parser.add_argument("--steps", type=int, default=0, help="timed training steps per run")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier result")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-sections", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)
    return run_command(lambda: orchestrate(args), debug=args.debug, name="gpu_check")


def _plan(args) -> Plan:
    plan = SMOKE if args.smoke else FULL
    if getattr(args, "steps", 0):
        plan = dataclasses.replace(plan, steps=args.steps)
    return plan


def _selected(args) -> list[str]:
    wanted = [s for s in args.sections.split(",") if s] or list(SECTIONS)
    skipped = [s for s in args.skip.split(",") if s]
    unknown = [s for s in [*wanted, *skipped] if s not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}"
        )
    return [s for s in SECTIONS if s in wanted and s not in skipped]


def _caps(args, plan: Plan) -> dict[str, float]:
    if not args.caps_scale > 0:
        raise ConfigError(f"--caps-scale must be > 0, got {args.caps_scale}")
    if args.steps < 0:
        raise ConfigError(f"--steps must be >= 1 (0: the plan's), got {args.steps}")
    caps = {name: cap * args.caps_scale for name, cap in plan.caps.items()}
    for item in args.section_cap:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in SECTIONS or seconds <= 0:
            raise ConfigError(
                f"--section-cap {item!r}: expected NAME=SECONDS with NAME one of "
                f"{', '.join(SECTIONS)} and SECONDS > 0"
            )
        caps[name] = seconds
    return caps


def orchestrate(args) -> int:
    plan = _plan(args)
    sections = _selected(args)
    caps = _caps(args, plan)
    budget = args.budget or (600.0 if args.smoke else 450.0)
    out = Path(args.out)
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not args.overwrite:
        raise ConfigError(
            f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them, "
            "or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="csetgraph-gpu-check-"))
    (work / "state").mkdir(parents=True, exist_ok=True)
    for stale in (work / "state").glob("*.json"):
        stale.unlink()
    args.work = str(work)
    report = {
        "schema": SCHEMA,
        "script": "benchmarks/gpu_check.py",
        "plan": plan.name,
        "argv": sys.argv[1:],
        "device_requested": args.device,
        "budget_s": budget,
        "started": _now(),
        "finished": None,
        "wall_s": None,
        "work": str(work),
        "order": sections,
        "sections": {s: {"status": "pending"} for s in sections},
        "failures": [],
        "derived": {},
    }
    start = time.monotonic()
    pending = list(sections)
    log_path = out / "gpu_check.log"
    with open(log_path, "a") as log:
        while pending:
            left = budget - (time.monotonic() - start)
            if left < 1.0:
                for name in pending:
                    report["sections"][name] = {"status": "skipped", "error": "out of budget"}
                break
            done = _run_worker_once(args, pending, caps, start, budget, log, report, out)
            pending = [s for s in pending if s not in done]
    report["finished"] = _now()
    report["wall_s"] = round(time.monotonic() - start, 3)
    _finalise(report)
    _write_outputs(report, out)
    print(render_table(report))
    return 0 if not report["failures"] else 1


def _run_worker_once(args, pending, caps, start, budget, log, report, out) -> set[str]:
    """One worker over ``pending``; returns the sections it settled (done, failed, killed)."""
    state = Path(args.work) / "state"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    cmd += ["--worker-sections", ",".join(pending), "--work", args.work, "--out", args.out]
    cmd += ["--device", args.device, "--compile-backend", args.compile_backend]
    cmd += ["--smoke"] if args.smoke else []
    cmd += ["--steps", str(args.steps)] if args.steps else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["GPU_CHECK_CAPS"] = json.dumps(caps)
    env["GPU_CHECK_DEADLINE"] = repr(time.time() + budget - (time.monotonic() - start))
    log.flush()
    (state / "current.json").unlink(missing_ok=True)  # an earlier worker's section
    # Its own process group, so that a kill takes what it started too (pytest, loader workers);
    # not its own session, so that it still ends with the command that started this check.
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=os.setpgrp
    )
    try:
        return _watch(proc, args, pending, start, budget, report, out)
    except BaseException:
        _kill(proc)
        raise


def _watch(proc, args, pending, start, budget, report, out) -> set[str]:
    """Merge the worker's results as they come; kill it when a section outruns its cap."""
    state = Path(args.work) / "state"
    settled: set[str] = set()
    killed_for = None
    written = None
    while True:
        settled |= _merge_state(state, report, pending)
        snapshot = json.dumps(report["sections"], sort_keys=True)
        if snapshot != written:  # rewrite only what changed: partial results as they come
            _write_outputs(report, out)
            written = snapshot
        if proc.poll() is not None:
            break
        current = _read_json(state / "current.json")
        now = time.monotonic()
        over_budget = now - start > budget
        if current and current["section"] not in settled:
            ran = time.time() - current["started"]
            if ran > current["cap"] or over_budget:
                killed_for = (current["section"], ran, "budget" if over_budget else "cap")
                _kill(proc)
                break
        elif over_budget:
            _kill(proc)
            break
        time.sleep(0.25)
    settled |= _merge_state(state, report, pending)
    current = _read_json(state / "current.json")
    if killed_for is not None:
        name, ran, why = killed_for
        entry = report["sections"][name]
        entry["status"] = "timeout"
        limit = "the run's --budget" if why == "budget" else f"its cap of {current['cap']:.0f} s"
        entry["error"] = f"stopped after {ran:.1f} s ({limit}); partial results kept"
        entry["seconds"] = round(ran, 3)
        settled.add(name)
    elif current and current["section"] not in settled and proc.returncode != 0:
        name = current["section"]
        entry = report["sections"][name]
        entry["status"] = "crashed"
        entry["error"] = f"the worker died (exit status {proc.returncode}); see gpu_check.log"
        entry["log_tail"] = _tail(Path(args.out) / "gpu_check.log", 2000)
        settled.add(name)
    if not settled and proc.returncode is not None:
        # The worker died before starting a section (an import error, say): stop here.
        for name in pending:
            report["sections"][name] = {
                "status": "crashed",
                "error": f"the worker exited with status {proc.returncode} before this section",
                "log_tail": _tail(Path(args.out) / "gpu_check.log", 2000),
            }
        settled = set(pending)
    return settled


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and what it started (pytest, loaders)
    except ProcessLookupError:
        pass
    proc.wait()


def _merge_state(state: Path, report: dict, pending: list[str]) -> set[str]:
    """Copy finished and partial section results from the worker's files into ``report``."""
    settled = set()
    for name in pending:
        result = _read_json(state / f"{name}.json")
        if result is None:
            continue
        report["sections"][name] = result
        if result.get("status") not in ("running",):
            settled.add(name)
    return settled


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _finalise(report: dict) -> None:
    """The failures list and the ratios read across sections (compiled vs eager, ...)."""
    failures = []
    for name in report["order"]:
        entry = report["sections"][name]
        if entry.get("status") != "ok":
            failures.append(
                {"section": name, "status": entry.get("status"), "error": entry.get("error", "")}
            )
        for check in entry.get("checks", []):
            if not check["passed"]:
                failures.append(
                    {
                        "section": name,
                        "status": "check failed",
                        "error": f"{check['name']}: {check['detail']}",
                    }
                )
    report["failures"] = failures
    recipe = report["sections"].get("recipe", {}).get("result", {}).get("runs", {})
    compiled = report["sections"].get("compile", {}).get("result", {}).get("runs", {})
    derived = {}
    base = recipe.get("baseline/bf16", {})
    for key, run in recipe.items():
        if base.get("step_ms_median") and key.endswith("/bf16") and run.get("step_ms_median"):
            derived[f"{key} step x baseline"] = run["step_ms_median"] / base["step_ms_median"]
    for key, run in compiled.items():
        eager = recipe.get(key)
        if eager and run.get("step_ms_median"):
            derived[f"{key} compiled speed-up"] = eager["step_ms_median"] / run["step_ms_median"]
    report["derived"] = {k: round(v, 4) for k, v in derived.items()}


def _write_outputs(report: dict, out: Path) -> None:
    write_atomic(out / "gpu_check.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out / "gpu_check.md", (render_table(report) + "\n").encode())


# ============================================================================ the table


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def render_table(report: dict) -> str:
    """The report as Markdown: a header, one line per section, then each section's table."""
    secs = report["sections"]
    env = secs.get("env", {}).get("result", {})
    lines = ["# GPU check", ""]
    lines.append(
        f"device {env.get('device', '?')} ({env.get('device_name', '?')}), torch "
        f"{env.get('torch', '?')}, CUDA {env.get('cuda', '-')}, plan {report['plan']}, "
        f"started {report['started']}, wall {_fmt(report.get('wall_s'), 1)} s of "
        f"{_fmt(report['budget_s'], 0)} s"
    )
    lines += ["", "| section | status | seconds | note |", "|---|---|---|---|"]
    for name in report["order"]:
        e = secs[name]
        note = (e.get("error") or "").replace("|", "/").splitlines()
        lines.append(
            f"| {name} | {e.get('status')} | {_fmt(e.get('seconds'), 1)} | "
            f"{note[0][:120] if note else ''} |"
        )
    for name in report["order"]:
        body = _SECTION_TABLES.get(name)
        result = secs[name].get("result")
        checks = secs[name].get("checks") or []
        if (body and result) or checks:
            lines += ["", f"## {name}"]
        if body and result:
            lines.append("")
            try:
                lines += body(result)
            except Exception as err:  # a partial result must not cost the whole report
                lines.append(f"(no table: {type(err).__name__}: {err})")
        if checks:
            lines += ["", "| check | passed | detail |", "|---|---|---|"]
            lines += [
                f"| {c['name']} | {c['passed']} | {c['detail'].replace('|', '/')} |" for c in checks
            ]
    if report.get("derived"):
        lines += ["", "## derived", "", "| ratio | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in report["derived"].items()]
    if report.get("failures"):
        lines += ["", "## failures", ""]
        lines += [f"- {f['section']}: {f['status']}: {f['error']}" for f in report["failures"]]
    return "\n".join(lines)


def _table_recipe(r: dict) -> list[str]:
    rows = [
        "| run | step ms (median) | images/s | peak MiB | first loss |",
        "|---|---|---|---|---|",
    ]
    for key, run in r.get("runs", {}).items():
        rows.append(
            f"| {key} | {_fmt(run.get('step_ms_median'))} | {_fmt(run.get('images_per_s'), 1)} | "
            f"{_mib(run.get('max_memory_allocated'))} | {_fmt(run.get('first_loss'), 4)} |"
        )
    return rows


def _table_compile(r: dict) -> list[str]:
    rows = ["| run | compile s (first step) | step ms (median) | images/s | peak MiB |"]
    rows.append("|---|---|---|---|---|")
    for key, run in r.get("runs", {}).items():
        rows.append(
            f"| {key} | {_fmt(run.get('compile_s'))} | {_fmt(run.get('step_ms_median'))} | "
            f"{_fmt(run.get('images_per_s'), 1)} | {_mib(run.get('max_memory_allocated'))} |"
        )
    return rows


def _table_loader(r: dict) -> list[str]:
    rows = ["| workers | path | img/s median | min-max | tensor/pil |", "|---|---|---|---|---|"]
    for workers, run in r.get("by_workers", {}).items():
        speedup = _fmt(run.get("speedup"))
        for path in ("tensor", "pil"):
            p = run.get(path, {})
            rows.append(
                f"| {workers} | {path} | {_fmt(p.get('median'), 0)} | {_fmt(p.get('min'), 0)}-"
                f"{_fmt(p.get('max'), 0)} | {speedup if path == 'tensor' else ''} |"
            )
    return rows


def _table_wait(r: dict) -> list[str]:
    rows = ["| path | wait share (synced) | img/s loader | img/s in memory | loss |"]
    rows.append("|---|---|---|---|---|")
    for path, run in r.get("paths", {}).items():
        share = run.get("wait_share")
        lost = run.get("throughput_lost")
        rows.append(
            f"| {path} | {_fmt(None if share is None else 100 * share, 1)} % | "
            f"{_fmt(run.get('images_per_s_loader'), 1)} | "
            f"{_fmt(run.get('images_per_s_memory'), 1)} "
            f"| {_fmt(None if lost is None else 100 * lost, 1)} % |"
        )
    return rows


def _table_inference(r: dict) -> list[str]:
    rows = ["| model | precision | batch | ms/image | images/s |", "|---|---|---|---|---|"]
    for run in r.get("runs", []):
        rows.append(
            f"| {run['model']} | {run['precision']} | {run['batch']} | "
            f"{_fmt(run['ms_per_image'], 3)} | {_fmt(run['images_per_s'], 1)} |"
        )
    return rows


def _table_protocol(r: dict) -> list[str]:
    rows = [f"features + {r.get('trials')} trials in {_fmt(r.get('seconds'))} s ({r.get('amp')})"]
    rows += ["", "| mode | queries | gallery | R-1 | mAP |", "|---|---|---|---|---|"]
    for mode, m in r.get("modes", {}).items():
        rows.append(
            f"| {mode} | {m['num_query']} | {m['num_gallery']} | {100 * m['rank1']:.2f} | "
            f"{100 * m['mAP']:.2f} |"
        )
    return rows


def _table_onnx(r: dict) -> list[str]:
    rows = ["| file | vs torch CPU | vs device fp32 | cos fp32 | vs device bf16 | cos bf16 |"]
    rows.append("|---|---|---|---|---|---|")
    for modality, m in r.get("modalities", {}).items():
        rows.append(
            f"| embed_{modality}.onnx | {m.get('vs_torch_cpu', 0):.2e} | "
            f"{m.get('vs_device_fp32', 0):.2e} | {m.get('min_cos_fp32', 0):.6f} | "
            f"{m.get('vs_device_bf16', 0):.2e} | {m.get('min_cos_bf16', 0):.6f} |"
        )
    return rows


def _table_tests(r: dict) -> list[str]:
    rows = [
        f"{r.get('collected')} collected: {r.get('passed')} passed, {r.get('failed')} failed, "
        f"{r.get('errors')} errors, {r.get('skipped')} skipped"
    ]
    bad = [t for t in r.get("tests", []) if t["outcome"] in ("failed", "error")]
    rows += [f"- {t['name']}: {t['outcome']}: {t['message'][:200]}" for t in bad]
    return rows


def _table_env(r: dict) -> list[str]:
    return ["| key | value |", "|---|---|"] + [
        f"| {k} | {v} |" for k, v in r.items() if not isinstance(v, dict | list)
    ]


_SECTION_TABLES: dict[str, Callable[[dict], list[str]]] = {
    "env": _table_env,
    "cuda_tests": _table_tests,
    "recipe": _table_recipe,
    "compile": _table_compile,
    "loader": _table_loader,
    "loader_wait": _table_wait,
    "inference": _table_inference,
    "protocol": _table_protocol,
    "onnx": _table_onnx,
}


# ============================================================================ the worker


class Section:
    """What a running section reports: partial results (written at once), checks, errors."""

    def __init__(self, name: str, state: Path, cap: float, deadline: float):
        self.name, self.state = name, state
        self.started = time.time()
        self.deadline = min(self.started + cap, deadline)
        self.result: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []
        self.left_out: list[str] = []
        write_atomic(
            state / "current.json",
            json.dumps({"section": name, "started": self.started, "cap": cap}).encode(),
        )

    def left(self) -> float:
        """Seconds until this section should wrap up (its cap or the run's budget)."""
        return self.deadline - time.time()

    def out_of_time(self, what: str) -> dict[str, str]:
        """Note a part left out for lack of time (the section then ends "incomplete")."""
        self.left_out.append(what)
        return {"skipped": "out of time"}

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append({"name": name, "passed": bool(passed), "detail": detail})

    def save(self, status: str = "running", error: str = "") -> None:
        entry = {
            "status": status,
            "seconds": round(time.time() - self.started, 3),
            "result": self.result,
            "checks": self.checks,
        }
        if error:
            entry["error"] = error
        write_atomic(self.state / f"{self.name}.json", json.dumps(entry, default=str).encode())


class Context:
    """What the sections share inside one worker: device, plan, folders, the data set."""

    def __init__(self, args):
        import torch

        from csetgraph.engine.distributed import resolve_device

        self.args, self.plan = args, _plan(args)
        self.device = resolve_device(args.device, option="--device")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.work, self.out = Path(args.work), Path(args.out)
        self.backend = args.compile_backend or ("eager" if args.smoke else "inductor")
        self.data_root = self.work / "sysu"
        self.cache_dir = self.work / "cache"
        self._data_thread: threading.Thread | None = None
        self._data_error: BaseException | None = None
        self._data_seconds: float | None = None

    # -- data, generated in a thread while the first sections run
    def start_data(self) -> None:
        def generate():
            from csetgraph.data.synthetic import generate_sysu_mm01

            t0 = time.perf_counter()
            try:
                p = self.plan
                generate_sysu_mm01(
                    self.data_root,
                    num_train_ids=p.train_ids,
                    num_val_ids=VAL_IDS,
                    num_test_ids=p.test_ids,
                    images_per_camera=p.images_per_camera,
                    height=int(p.height * 1.125),
                    width=int(p.width * 1.125),
                    seed=0,
                    progress=False,
                )
            except BaseException as err:  # reported by the data section
                self._data_error = err
            self._data_seconds = time.perf_counter() - t0

        self._data_thread = threading.Thread(target=generate, daemon=True)
        self._data_thread.start()

    def wait_data(self, timeout: float) -> float:
        if self._data_thread is None:
            self.start_data()
        self._data_thread.join(max(0.0, timeout))
        if self._data_thread.is_alive():
            raise TimeoutError("the synthetic data set is still being generated")
        if self._data_error is not None:
            raise self._data_error
        return self._data_seconds or 0.0

    def data_ready(self) -> bool:
        return (self.work / "state" / "data.json").exists() and _read_json(
            self.work / "state" / "data.json"
        ).get("status") == "ok"

    def recipe(self, *extra: str):
        """configs/sysu_mm01.yaml with the plan's overrides, on the synthetic data."""
        from csetgraph.config import load_config

        p = self.plan
        return load_config(
            ROOT / "configs" / "sysu_mm01.yaml",
            [
                *p.overrides,
                f"data.height={p.height}",
                f"data.width={p.width}",
                f"data.num_ids_per_batch={p.ids}",
                f"data.num_instances={p.instances}",
                f"data.root={self.data_root}",
                f"data.cache_dir={self.cache_dir}",
                f"train.device={self.device}",
                *extra,
            ],
        )


def run_worker(args) -> int:
    ctx = Context(args)
    state = ctx.work / "state"
    caps = json.loads(os.environ.get("GPU_CHECK_CAPS", "{}")) or _plan(args).caps
    deadline = float(os.environ.get("GPU_CHECK_DEADLINE", time.time() + 3600))
    names = [s for s in args.worker_sections.split(",") if s]
    _exit_with_parent()
    if "data" in names:
        ctx.start_data()
    for name in names:
        section = Section(name, state, float(caps.get(name, 60)), deadline)
        print(f"== {name} ({_now()})", flush=True)
        if name in NEEDS_DATA and not ctx.data_ready():
            section.save("skipped", "needs the data section, which did not finish")
            continue
        try:
            SECTION_FUNCS[name](ctx, section)
        except Exception as err:
            traceback.print_exc()
            section.save("error", f"{type(err).__name__}: {err}".strip())
            _free(ctx)
            continue
        if section.left_out:
            section.save("incomplete", f"out of time before: {', '.join(section.left_out)}")
        else:
            section.save("ok")
        _free(ctx)
    return 0


def _exit_with_parent() -> None:
    """End this worker if the check that started it is gone (killed, interrupted)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _free(ctx: Context) -> None:
    import gc

    import torch

    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - t0, value


# ---------------------------------------------------------------------------- env


def section_env(ctx: Context, sec: Section) -> None:
    import torch

    r = sec.result
    r["device"] = str(ctx.device)
    r["torch"] = torch.__version__
    r["cuda"] = torch.version.cuda
    r["python"] = platform.python_version()
    r["platform"] = platform.platform()
    r["cpu_count"] = os.cpu_count()
    r["torch_threads"] = torch.get_num_threads()
    r["csetgraph_root"] = str(ROOT)
    r["git_commit"] = _git_commit()
    for module in ("timm", "torch_geometric", "numpy", "onnx", "onnxruntime", "onnxscript"):
        try:
            r[module] = __import__(module).__version__
        except Exception as err:  # a missing package is a finding, not a failure here
            r[module] = f"missing ({type(err).__name__})"
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        r["device_name"] = props.name
        r["capability"] = f"{props.major}.{props.minor}"
        r["total_memory_gib"] = round(props.total_memory / 2**30, 1)
        r["multiprocessors"] = props.multi_processor_count
        r["cudnn"] = torch.backends.cudnn.version()
        r["bf16_native"] = torch.cuda.is_bf16_supported(including_emulation=False)
        r["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        r["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        r["nvidia_smi"] = _nvidia_smi()
    else:
        from csetgraph.engine.distributed import cpu_model

        r["device_name"] = cpu_model()
        r["cpu_capability"] = torch.backends.cpu.get_cpu_capability()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _nvidia_smi() -> str | None:
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------- cuda tests


def section_cuda_tests(ctx: Context, sec: Section) -> None:
    xml = ctx.out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/gpu", "-q", "-rA"]
    cmd += ["-p", "no:cacheprovider", f"--junitxml={xml}"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += ["--timeout", "90"]  # one hung test (an NCCL set-up, say) must not take them all
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    timeout = max(5.0, sec.left() - 5)
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        sec.result["stdout_tail"] = (err.stdout or b"")[-3000:] if err.stdout else ""
        raise TimeoutError(f"pytest did not finish within {timeout:.0f} s") from None
    print(proc.stdout[-20000:], proc.stderr[-5000:], flush=True)
    r = sec.result
    r["command"] = " ".join(cmd[1:])
    r["returncode"] = proc.returncode
    r.update(parse_junit(xml))
    r["stdout_tail"] = proc.stdout[-3000:]
    cuda = ctx.device.type == "cuda"
    sec.check("tests collected", r["collected"] > 0, f"{r['collected']} collected")
    sec.check(
        "no failures", r["failed"] + r["errors"] == 0, f"{r['failed']} failed, {r['errors']} errors"
    )
    if cuda:
        sec.check("none skipped on CUDA", r["skipped"] == 0, f"{r['skipped']} skipped")
    else:
        reasons = {t["message"] for t in r["tests"] if t["outcome"] == "skipped"}
        sec.check(
            "all skipped with their reason without CUDA",
            r["skipped"] == r["collected"] and all(CUDA_SKIP_REASON in m for m in reasons),
            f"{r['skipped']} of {r['collected']} skipped; reasons {sorted(reasons)}",
        )


def parse_junit(path: Path) -> dict:
    """Counts and per-test outcomes from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "").strip()
                break
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tests.append({"name": name, "outcome": outcome, "message": message[:2000]})
    count = {
        o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")
    }
    return {
        "collected": len(tests),
        "passed": count["passed"],
        "failed": count["failed"],
        "errors": count["error"],
        "skipped": count["skipped"],
        "tests": tests,
    }


# ---------------------------------------------------------------------------- data


def section_data(ctx: Context, sec: Section) -> None:
    from csetgraph.data.sysu_mm01 import all_records, train_records

    seconds = ctx.wait_data(sec.left() - 2)
    train = train_records(ctx.data_root, split="train+val")
    test = all_records(ctx.data_root, "test")
    p = ctx.plan
    sec.result.update(
        root=str(ctx.data_root),
        generation_s=round(seconds, 3),
        image_size=[int(p.height * 1.125), int(p.width * 1.125)],
        train_images=len(train),
        train_ids=len({r.pid for r in train}),
        test_images={m: len(v) for m, v in test.items()},
    )
    expected = (p.train_ids + VAL_IDS) * 6 * p.images_per_camera  # every id in all 6 cameras
    sec.check("train images", len(train) == expected, f"{len(train)} (expected {expected})")


# ---------------------------------------------------------------------------- training steps


def _variants(cfg) -> dict[str, Any]:
    """Baseline, full CSET with SE after every block (the recipe), and the last quarter."""
    from csetgraph.models.ablation import ablation_config

    every = list(cfg.model.se.layers)
    quarter = every[-max(1, (len(every) + 1) // 4) :]
    full = ablation_config(cfg, "SE both + CA + MHGA")
    last = ablation_config(cfg, "SE both + CA + MHGA")
    last.model.se.layers = quarter
    return {
        "baseline": ablation_config(cfg, "baseline"),
        "cset_every_block": full,
        "cset_last_quarter": last,
    }


def _batch(ctx: Context, seed: int = 0):
    """One in-memory training batch: P x K aligned pairs, pids as the sampler makes them."""
    import torch

    p = ctx.plan
    g = torch.Generator().manual_seed(seed)
    b = p.ids * p.instances
    vis = torch.randn(b, 3, p.height, p.width, generator=g)
    ir = torch.randn(b, 3, p.height, p.width, generator=g)
    pids = torch.arange(p.ids).repeat_interleave(p.instances)
    return vis.to(ctx.device), ir.to(ctx.device), torch.cat([pids, pids]).to(ctx.device)


def _trainer_parts(ctx: Context, cfg, amp: str, compile_backend: str | None = None):
    """Model, loss, Adam (the trainer's parameter groups) and autocast, as training builds them."""
    import torch

    from csetgraph.engine.distributed import autocast_context
    from csetgraph.engine.trainer import param_groups
    from csetgraph.losses import build_criterion
    from csetgraph.models import build_model

    torch.manual_seed(0)
    size = (cfg.data.height, cfg.data.width)
    model = build_model(cfg.model, ctx.plan.num_classes, size).to(ctx.device).train()
    criterion = build_criterion(cfg.loss)
    optimizer = torch.optim.Adam(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    amp_ctx, scaler = autocast_context(amp, ctx.device)
    run_model, run_loss = model, criterion
    if compile_backend:
        run_model = torch.compile(model, backend=compile_backend)
        run_loss = torch.compile(criterion, backend=compile_backend)

    def step(vis, ir, pids):
        with amp_ctx:
            loss, _ = run_loss(run_model(vis, ir), pids)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    return model, step


def _measure_steps(ctx: Context, step, batch, share: float) -> dict:
    """First step, warm-up, ``steps`` steps timed one by one, then a window of as many."""
    import torch

    p, dev = ctx.plan, ctx.device
    stop = time.time() + share
    first_s, loss = _timed(lambda: step(*batch), dev)
    first_loss = float(loss)
    for _ in range(p.warmup - 1):
        step(*batch)
    times = []
    for _ in range(p.steps):
        times.append(_timed(lambda: step(*batch), dev)[0])
        if time.time() > stop and len(times) >= 2:
            break
    n = len(times)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step(*batch)
    _sync(dev)
    window = time.perf_counter() - t0
    last_loss = float(loss)
    return {
        "batch_images": p.batch_images,
        "steps": n,
        "first_step_s": round(first_s, 4),
        "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_min": 1e3 * min(times),
        "step_ms_max": 1e3 * max(times),
        "window_s": window,
        "images_per_s": p.batch_images * n / window,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "finite": math.isfinite(first_loss) and math.isfinite(last_loss),
        "max_memory_allocated": (
            torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
        ),
    }


def section_recipe(ctx: Context, sec: Section) -> None:
    import torch

    cfg = ctx.recipe()
    variants = _variants(cfg)
    sec.result["config"] = {
        "backbone": cfg.model.backbone,
        "input": [cfg.data.height, cfg.data.width],
        "batch_images": ctx.plan.batch_images,
        "se_layers": {
            k: list(v.model.se.layers) if v.model.se.direction != "none" else []
            for k, v in variants.items()
        },
    }
    runs = sec.result.setdefault("runs", {})
    batch = _batch(ctx)
    jobs = [(name, amp) for name in variants for amp in ("bf16", "off")]
    for i, (name, amp) in enumerate(jobs):
        key = f"{name}/{'bf16' if amp == 'bf16' else 'fp32'}"
        if sec.left() < 3:
            runs[key] = sec.out_of_time(key)
            continue
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        model, step = _trainer_parts(ctx, variants[name], amp)
        share = max(1.0, (sec.left() - 3) / (len(jobs) - i) * 0.5)  # half for the timed steps
        runs[key] = _measure_steps(ctx, step, batch, share)
        runs[key]["parameters"] = sum(q.numel() for q in model.parameters())
        del model, step
        _free(ctx)
        sec.save()
    for name in variants:
        a, b = runs.get(f"{name}/bf16", {}), runs.get(f"{name}/fp32", {})
        if "first_loss" in a and "first_loss" in b:
            rel = abs(a["first_loss"] - b["first_loss"]) / max(abs(b["first_loss"]), 1e-12)
            sec.check(f"{name}: first loss bf16 vs fp32", rel < 0.05, f"relative {rel:.2e}")
    for key, run in runs.items():
        if "finite" in run:
            sec.check(f"{key}: losses finite", run["finite"], f"last {run['last_loss']:.4f}")


def section_compile(ctx: Context, sec: Section) -> None:
    import torch

    cfg = ctx.recipe()
    variants = _variants(cfg)
    sec.result["backend"] = ctx.backend
    runs = sec.result.setdefault("runs", {})
    batch = _batch(ctx)
    for name in ctx.plan.compile_variants:
        key = f"{name}/bf16"
        if sec.left() < 5:
            runs[key] = sec.out_of_time(key)
            continue
        torch._dynamo.reset()
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        model, step = _trainer_parts(ctx, variants[name], "bf16", compile_backend=ctx.backend)
        runs[key] = {"compiling": True}
        sec.save()  # a timeout during compilation still says which run it was
        run = _measure_steps(ctx, step, batch, max(1.0, min(20.0, sec.left() / 4)))
        run["compile_s"] = max(0.0, run["first_step_s"] - run["step_ms_median"] / 1e3)
        runs[key] = run
        del model, step
        _free(ctx)
        sec.save()
        sec.check(f"{key}: losses finite", run["finite"], f"last {run['last_loss']:.4f}")


# ---------------------------------------------------------------------------- the loader


def _bench_loader():
    spec = importlib.util.spec_from_file_location(
        "bench_loader", ROOT / "benchmarks" / "bench_loader.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section_loader(ctx: Context, sec: Section) -> None:
    from csetgraph.data.build import build_train_data
    from csetgraph.data.cache import ensure_cache

    bl = _bench_loader()
    p = ctx.plan
    base = ctx.recipe().data
    data = build_train_data(base)
    paths = [r.path for r in data.vis] + [r.path for r in data.ir]
    t0 = time.perf_counter()
    ensure_cache(
        paths,
        base.height,
        base.width,
        ctx.cache_dir,
        num_workers=max(p.loader_workers),
        progress=False,
    )
    build = time.perf_counter() - t0
    sec.result.update(
        images=len(paths),
        size=[base.height, base.width],
        batch_images=p.batch_images,
        batches_per_round=p.loader_batches,
        cache_build_s=build,
    )
    by = sec.result.setdefault("by_workers", {})
    for workers in p.loader_workers:
        if sec.left() < 5:
            by[str(workers)] = sec.out_of_time(f"{workers} workers")
            continue
        cfg = dataclasses.replace(base, num_workers=workers)
        loaders = bl.make_loaders(cfg, data, ctx.device, p.loader_batches)
        rates = bl.throughput(loaders, p.loader_rounds, ctx.device)
        entry = {
            path: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
            for path, v in rates.items()
        }
        entry["ratios"] = [t / q for t, q in zip(rates["tensor"], rates["pil"], strict=True)]
        entry["speedup"] = entry["tensor"]["median"] / entry["pil"]["median"]
        by[str(workers)] = entry
        del loaders
        sec.save()


def section_loader_wait(ctx: Context, sec: Section) -> None:
    from csetgraph.data.build import build_train_data
    from csetgraph.data.pipeline import PIPELINES, build_train_loader
    from csetgraph.data.samplers import CrossModalityIdentitySampler
    from csetgraph.engine.runs import input_stats

    p = ctx.plan
    cfg = _variants(ctx.recipe())["cset_every_block"]
    amp = cfg.train.amp  # the recipe's: auto = bf16 on a GPU with native bf16
    workers = cfg.data.num_workers if not ctx.args.smoke else 0
    data = build_train_data(dataclasses.replace(cfg.data, num_workers=workers))
    sec.result.update(variant="cset_every_block", amp=amp, workers=workers, steps=p.wait_steps)
    paths = sec.result.setdefault("paths", {})
    for i, name in enumerate(PIPELINES):
        if sec.left() < 5:
            paths[name] = sec.out_of_time(name)
            continue
        model, step = _trainer_parts(ctx, cfg, amp)
        mean, std = input_stats(model, cfg)
        sampler = CrossModalityIdentitySampler(
            [r.pid for r in data.vis],
            [r.pid for r in data.ir],
            p.ids,
            p.instances,
            batches_per_epoch=2 + 2 * p.wait_steps,
        )
        loader = build_train_loader(
            dataclasses.replace(cfg.data, pipeline=name, num_workers=workers),
            data.vis,
            data.ir,
            sampler,
            ctx.device,
            mean,
            std,
            progress=False,
        )
        budget = time.time() + max(2.0, (sec.left() - 3) / (len(PIPELINES) - i))
        paths[name] = _wait_share(ctx, loader, step, budget)
        del model, step, loader
        _free(ctx)
        sec.save()
    tensor = paths.get("tensor", {})
    if "wait_share" in tensor and ctx.device.type == "cuda":
        sec.check(
            "tensor path waits under 5% of the step (goal)",
            tensor["wait_share"] < 0.05,
            f"{100 * tensor['wait_share']:.1f}%",
        )


def _wait_share(ctx: Context, loader, step, stop: float) -> dict:
    """Synced: time blocked on the next batch (copy and device augmentation included) over
    the step's wall time. Unsynced: images/s fed by the loader against the same steps on one
    batch kept in memory."""
    dev, p = ctx.device, ctx.plan
    loader.set_epoch(0)
    it = iter(loader)
    first = next(it)  # untimed: workers start and fill their queues, as in a long run
    vis, ir, vp, ip = first
    step(vis, ir, torch_cat(vp, ip))
    waited, total, n = 0.0, 0.0, 0
    for _ in range(p.wait_steps):
        _sync(dev)
        t0 = time.perf_counter()
        vis, ir, vp, ip = next(it)
        _sync(dev)
        t1 = time.perf_counter()
        step(vis, ir, torch_cat(vp, ip))
        _sync(dev)
        waited, total, n = waited + t1 - t0, total + time.perf_counter() - t0, n + 1
        if time.time() > stop and n >= 2:
            break
    m = n
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(m):
        vis, ir, vp, ip = next(it)
        step(vis, ir, torch_cat(vp, ip))
    _sync(dev)
    with_loader = time.perf_counter() - t0
    fixed = (first[0], first[1], torch_cat(first[2], first[3]))
    t0 = time.perf_counter()
    for _ in range(m):
        step(*fixed)
    _sync(dev)
    in_memory = time.perf_counter() - t0
    ips_loader = p.batch_images * m / with_loader
    ips_memory = p.batch_images * m / in_memory
    return {
        "synced_steps": n,
        "wait_s": waited,
        "total_s": total,
        "wait_share": waited / total,
        "window_steps": m,
        "window_loader_s": with_loader,
        "window_memory_s": in_memory,
        "images_per_s_loader": ips_loader,
        "images_per_s_memory": ips_memory,
        "throughput_lost": max(0.0, 1 - ips_loader / ips_memory),
    }


def torch_cat(a, b):
    import torch

    return torch.cat([a, b])


# ---------------------------------------------------------------------------- inference


def section_inference(ctx: Context, sec: Section) -> None:
    import torch

    from csetgraph.evaluation.features import eval_autocast
    from csetgraph.models import build_model

    p = ctx.plan
    variants = _variants(ctx.recipe())
    runs = sec.result.setdefault("runs", [])
    size = (p.height, p.width)
    jobs = [
        (m, amp, b)
        for m in ("cset_every_block", "baseline")
        for amp in ("bf16", "off")
        for b in p.infer_batches
    ]
    models = {}
    for i, (name, amp, batch) in enumerate(jobs):
        if sec.left() < 2:
            sec.out_of_time(f"{name}/{amp}/batch {batch}")
            continue
        if name not in models:
            torch.manual_seed(0)
            models[name] = build_model(variants[name].model, p.num_classes, size)
            models[name] = models[name].to(ctx.device).eval()
        model = models[name]
        images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))
        images = images.to(ctx.device)
        stop = time.time() + max(0.5, (sec.left() - 2) / (len(jobs) - i))

        def call(model=model, images=images, amp=amp):
            with torch.inference_mode(), eval_autocast(amp, ctx.device):
                return model.embed(images, "ir")

        for _ in range(3 if not ctx.args.smoke else 1):
            call()
        times = []
        for _ in range(p.infer_reps):
            times.append(_timed(call, ctx.device)[0])
            if time.time() > stop and len(times) >= 2:
                break
        med = statistics.median(times)
        runs.append(
            {
                "model": "cset (clean stream + MHGA)" if name != "baseline" else "baseline",
                "precision": "bf16" if amp == "bf16" else "fp32",
                "batch": batch,
                "calls": len(times),
                "call_ms_median": 1e3 * med,
                "ms_per_image": 1e3 * med / batch,
                "images_per_s": batch / med,
            }
        )
        sec.save()


# ---------------------------------------------------------------------------- protocol


def section_protocol(ctx: Context, sec: Section) -> None:
    import torch

    from csetgraph.data.sysu_mm01 import all_records
    from csetgraph.engine.runs import eval_transform, input_stats
    from csetgraph.engine.trainer import evaluate_model
    from csetgraph.evaluation.features import extract_features
    from csetgraph.models import build_model

    p = ctx.plan
    cfg = _variants(ctx.recipe(f"eval.trials={p.trials}", f"data.num_workers={p.eval_workers}"))[
        "cset_every_block"
    ]
    torch.manual_seed(0)
    model = build_model(cfg.model, p.num_classes, (p.height, p.width)).to(ctx.device).eval()
    mean, std = input_stats(model, cfg)
    seconds, results = _timed(
        lambda: evaluate_model(model, cfg, ctx.device, mean, std, progress=False), ctx.device
    )
    r = sec.result
    r.update(trials=p.trials, seconds=seconds, amp=f"eval.amp={cfg.eval.amp}")
    modes = r.setdefault("modes", {})
    for mode, res in results.items():
        first = res["trials"][0]
        modes[mode] = {
            **res["mean"],
            "trials": len(res["trials"]),
            "num_query": first["num_query"],
            "num_gallery": first["num_gallery"],
            "std": res["std"],
        }
        ranks = [res["mean"][k] for k in ("rank1", "rank5", "rank10", "rank20")]
        sec.check(
            f"{mode}: {p.trials} trials", len(res["trials"]) == p.trials, f"{len(res['trials'])}"
        )
        sec.check(
            f"{mode}: 0 <= R-1 <= R-5 <= R-10 <= R-20 <= 1",
            all(0 <= a <= b <= 1 for a, b in itertools.pairwise(ranks)),
            " ".join(f"{v:.3f}" for v in ranks),
        )
    sec.save()
    # The same images through the model on the device and on the CPU, in fp32.
    records = all_records(ctx.data_root, "test")["ir"][:16]
    tf = eval_transform(model, cfg)
    on_device = extract_features(
        model, records, "ir", transform=tf, device=ctx.device, amp="off", progress=False
    ).cpu()
    cpu_model = model.to("cpu")
    on_cpu = extract_features(cpu_model, records, "ir", transform=tf, amp="off", progress=False)
    diff = float((on_device - on_cpu).abs().max())
    cos = float(torch.nn.functional.cosine_similarity(on_device, on_cpu, dim=1).min())
    r["features_device_vs_cpu"] = {"images": len(records), "max_abs_diff": diff, "min_cos": cos}
    sec.check("fp32 features: device vs CPU", cos > 0.999, f"max |diff| {diff:.2e}, cos {cos:.6f}")


# ---------------------------------------------------------------------------- onnx


def section_onnx(ctx: Context, sec: Section) -> None:
    import numpy as np
    import torch

    from csetgraph.data.records import MODALITIES
    from csetgraph.deploy.embedder import RunEmbedder, weights_fingerprint
    from csetgraph.deploy.export import OnnxEmbedder, export_onnx, onnx_name
    from csetgraph.engine.runs import input_stats
    from csetgraph.evaluation.features import eval_autocast
    from csetgraph.models import build_model

    p = ctx.plan
    cfg = _variants(ctx.recipe())["cset_every_block"]
    torch.manual_seed(0)
    model = build_model(cfg.model, p.num_classes, (p.height, p.width)).to(ctx.device).eval()
    images = torch.randn(
        p.onnx_batch, 3, p.height, p.width, generator=torch.Generator().manual_seed(2)
    )
    on_device = {}
    with torch.inference_mode():
        for m in MODALITIES:
            x = images.to(ctx.device)
            on_device[m, "fp32"] = model.embed(x, m).float().cpu().numpy()
            with eval_autocast("bf16", ctx.device):
                on_device[m, "bf16"] = model.embed(x, m).float().cpu().numpy()
    mean, std = input_stats(model, cfg)
    embedder = RunEmbedder(
        model,
        cfg,
        {"run": "gpu_check", "weights": weights_fingerprint(model)},
        {"height": p.height, "width": p.width, "mean": list(mean), "std": list(std)},
    )
    folder = ctx.work / "onnx"
    seconds, report = _timed(lambda: export_onnx(embedder, folder), torch.device("cpu"))
    r = sec.result
    r.update(export_s=seconds, parity_batch=report.parity_batch, batch=p.onnx_batch)
    try:
        import onnxruntime

        r["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:  # pragma: no cover - export_onnx needs it
        pass
    mods = r.setdefault("modalities", {})
    for m in MODALITIES:
        ort = OnnxEmbedder(folder / onnx_name(m))(images.numpy())
        entry = {
            "vs_torch_cpu": report.max_abs_diff[m],
            "file_bytes": (folder / onnx_name(m)).stat().st_size,
        }
        for precision in ("fp32", "bf16"):
            ref = on_device[m, precision]
            cos = (ort * ref).sum(1) / (np.linalg.norm(ort, axis=1) * np.linalg.norm(ref, axis=1))
            entry[f"vs_device_{precision}"] = float(np.abs(ort - ref).max())
            entry[f"min_cos_{precision}"] = float(cos.min())
        mods[m] = entry
        sec.check(
            f"{m}: ONNX vs device fp32",
            entry["min_cos_fp32"] > 0.999,
            f"cos {entry['min_cos_fp32']:.6f}, max |diff| {entry['vs_device_fp32']:.2e}",
        )
        sec.check(
            f"{m}: ONNX vs device bf16",
            entry["min_cos_bf16"] > 0.99,
            f"cos {entry['min_cos_bf16']:.6f}",
        )
        sec.save()


SECTION_FUNCS: dict[str, Callable[[Context, Section], None]] = {
    "env": section_env,
    "cuda_tests": section_cuda_tests,
    "data": section_data,
    "recipe": section_recipe,
    "loader": section_loader,
    "loader_wait": section_loader_wait,
    "inference": section_inference,
    "protocol": section_protocol,
    "onnx": section_onnx,
    "compile": section_compile,
}


if __name__ == "__main__":
    raise SystemExit(main())
