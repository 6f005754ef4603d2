"""Multi-seed experiments: train several configurations over the same seeds, then compare.

The shared machinery of ``scripts/ablate.py`` (the paper's Table 1) and ``scripts/sweep.py``
(Figures 3 and 4): each configuration is trained once per seed; per metric the table reports
the mean and the sample standard deviation over seeds, and each configuration's *paired*
difference to the reference configuration (the same seeds, so seed-to-seed luck in
initialisation and batch order largely cancels) with a two-sided Student-t interval:

.. math::

    \\bar d \\pm t_{1-(1-c)/2,\\, n-1} \\; \\frac{s_d}{\\sqrt n},
    \\qquad d_s = m_s^{\\text{row}} - m_s^{\\text{reference}}

With one seed there is no spread, and the interval is reported as undefined (``null``).

On the synthetic data set a table can also be run on several *draws* (``data.synthetic.seed``:
other persons and cameras from the same renderer, :func:`draw_config`); :func:`summarise_draws`
then takes the draw as the unit: each draw's mean over its seeds, and each draw's mean paired
difference, with the interval over draws.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from csetgraph.config import Config
from csetgraph.errors import ConfigError
from csetgraph.files import atomic_path, write_atomic

#: The metrics a table shows (fractions in [0, 1] in JSON, percent in Markdown).
TABLE_METRICS = ("rank1", "mAP")


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``(mean, low, high)``; ``nan`` bounds if n < 2."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(student_t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def flatten_results(results: dict[str, dict]) -> dict[str, float]:
    """``{setting: {"mean": {metric: v}}}`` (a protocol's output) -> ``{"setting/metric": v}``."""
    return {
        f"{setting}/{metric}": float(value)
        for setting, res in results.items()
        for metric, value in res["mean"].items()
    }


def summarise(
    runs: dict[str, dict[int, dict[str, float]]], reference: str, confidence: float = 0.95
) -> dict[str, dict]:
    """Per row and metric: mean, std (ddof 1) and the paired difference to ``reference``.

    Args:
        runs: ``{row: {seed: {"setting/metric": value}}}``; every row must hold the
            reference's seeds.
        reference: the row the differences are taken against (the baseline).

    Returns:
        ``{row: {metric: {"mean", "std", "n", "values", "diff", "diff_low", "diff_high"}}}``.
    """
    if reference not in runs:
        raise ConfigError(f"the reference row {reference!r} was not run; run it too")
    seeds = sorted(runs[reference])
    out: dict[str, dict] = {}
    for row, by_seed in runs.items():
        if sorted(by_seed) != seeds:
            raise ConfigError(f"row {row!r} ran seeds {sorted(by_seed)}, the reference {seeds}")
        out[row] = {}
        for metric in runs[reference][seeds[0]]:
            values = [by_seed[s][metric] for s in seeds]
            diffs = [by_seed[s][metric] - runs[reference][s][metric] for s in seeds]
            out[row][metric] = _cell(values, diffs, confidence)
    return out


def _cell(values: list[float], diffs: list[float], confidence: float) -> dict:
    """One row's statistics of one metric: spread of ``values``, interval of ``diffs``."""
    d, lo, hi = t_interval(diffs, confidence)
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
        "n": len(values),
        "values": values,
        "diff": d,
        "diff_low": lo,
        "diff_high": hi,
    }


def summarise_draws(
    per_draw: dict[int, dict[str, dict]], reference: str, confidence: float = 0.95
) -> dict[str, dict]:
    """Across data draws, the draw as the unit: :func:`summarise`'s fields over draws.

    Args:
        per_draw: ``{draw: summarise(runs of that draw, reference)}``; every draw must hold
            the same rows and metrics.
        reference: the row the differences are taken against.

    Returns:
        ``{row: {metric: {...}}}`` as :func:`summarise`, where ``values`` are the draws' means
        over their seeds, ``mean`` and ``std`` are taken over those, ``n`` counts draws, and
        ``diff`` is the mean over draws of each draw's mean paired difference, with its
        t-interval over draws (undefined with one draw).
    """
    draws = sorted(per_draw)
    if not draws:
        raise ConfigError("no draws to summarise: pass --draws N with N >= 1")
    rows = list(per_draw[draws[0]])
    for d in draws:
        if list(per_draw[d]) != rows or reference not in per_draw[d]:
            raise ConfigError(f"draw {d} holds rows {list(per_draw[d])}, draw {draws[0]} {rows}")
    out: dict[str, dict] = {}
    for row in rows:
        out[row] = {}
        for metric in per_draw[draws[0]][row]:
            means = [per_draw[d][row][metric]["mean"] for d in draws]
            diffs = [per_draw[d][row][metric]["diff"] for d in draws]
            out[row][metric] = _cell(means, diffs, confidence)
    return out


def draw_config(cfg: Config, draw: int) -> Config:
    """A copy of ``cfg`` on draw ``draw`` of the synthetic data set (``data.synthetic.seed``).

    The config's own draw keeps ``data.root``; any other gets a folder of its own beside it,
    ``<data.root>-draw<k>``, so that no draw regenerates another's files.

    Raises:
        ConfigError: ``cfg`` reads a real data set, which has one draw.
    """
    if not cfg.data.synthetic.enabled:
        raise ConfigError(
            "--draws needs the synthetic data set (data.synthetic.enabled=true): a real data "
            "set is one draw of persons and cameras; drop --draws"
        )
    out = copy.deepcopy(cfg)
    if draw != cfg.data.synthetic.seed:
        out.data.synthetic.seed = draw
        out.data.root = f"{str(cfg.data.root).rstrip('/')}-draw{draw}"
    return out


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.2f}"


def markdown_table(
    summary: dict[str, dict], reference: str, confidence: float = 0.95, unit: str = "seeds"
) -> str:
    """One line per row: mean ± std and the paired difference [interval], in percent
    (``unit``: what the spread is over, ``"seeds"`` or ``"draws"``)."""
    metrics = [m for m in next(iter(summary.values())) if m.split("/")[-1] in TABLE_METRICS]
    header = "| configuration | " + " | ".join(f"{m} | Δ{m} vs {reference}" for m in metrics)
    lines = [header + " |", "|---" * (1 + 2 * len(metrics)) + "|"]
    for row, res in summary.items():
        cells = []
        for m in metrics:
            r = res[m]
            cells.append(f"{_pct(r['mean'])} ± {_pct(r['std'])}")
            if row == reference:
                cells.append("—")
            else:
                cells.append(
                    f"{100 * r['diff']:+.2f} [{_pct(r['diff_low'])}, {_pct(r['diff_high'])}]"
                )
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    n = next(iter(next(iter(summary.values())).values()))["n"]
    note = (
        f"\nMean ± std over {n} seeds (percent); Δ: paired difference to {reference} "
        f"over the same seeds with its {100 * confidence:.0f}% t-interval."
    )
    if unit == "draws":
        note = (
            f"\nMean ± std over {n} draws of each draw's mean over its seeds (percent); Δ: "
            f"the mean over draws of each draw's paired difference to {reference}, with its "
            f"{100 * confidence:.0f}% t-interval over draws."
        )
    return "\n".join(lines) + "\n" + note


#: The health table's columns: a mechanism of ``csetgraph inspect``'s verdicts, and the
#: statistics of its cell (``metrics.json`` keys of ``mechanisms.last``; ``*`` matches layers).
HEALTH_COLUMNS = (
    ("SE", (("same-position ≤", "se/*/same_position", "max"), ("cos i2v", "se/i2v/class_cosine"),
            ("cos v2i", "se/v2i/class_cosine"))),
    ("CA", (("entropy", "ca/entropy"),)),
    ("triplet", (("term", "triplet/loss"), ("active", "triplet/active"))),
    ("triplet (W' heads)", (("term", "triplet_heads/loss"), ("d+", "triplet_heads/pos_dist"),
                            ("d-", "triplet_heads/neg_dist"))),
    ("MHGA", (("same", "mhga/same"), ("adjacent", "mhga/adjacent"), ("distant", "mhga/distant"))),
)  # fmt: skip


def _values(last: dict[str, float], pattern: str) -> list[float]:
    head, _, tail = pattern.partition("*")
    if not _:
        return [last[pattern]] if pattern in last else []
    return [v for k, v in last.items() if k.startswith(head) and k.endswith(tail)]


def _span(values: list[float]) -> str:
    lo, hi = f"{min(values):.3f}", f"{max(values):.3f}"
    return lo if lo == hi else f"{lo}–{hi}"


def health_cells(sections: Sequence[dict]) -> dict[str, str]:
    """Per mechanism, one table cell over a row's seeds: how many seeds gave each verdict,
    then each statistic's range (``lo–hi``; a ``max`` statistic: the largest value).

    Args:
        sections: the ``mechanisms`` section of each seed's ``metrics.json``.

    Returns:
        ``{mechanism: cell}`` for the mechanisms present (in :data:`HEALTH_COLUMNS` order).
    """
    cells = {}
    for mechanism, stats in HEALTH_COLUMNS:
        levels = [
            v["level"] for s in sections for v in s["verdicts"] if v["mechanism"] == mechanism
        ]
        if not levels:
            continue
        by_count = sorted(set(levels), key=lambda lv: (-levels.count(lv), lv))
        parts = [", ".join(f"{lv} {levels.count(lv)}/{len(sections)}" for lv in by_count)]
        for name, pattern, *how in stats:
            values = [v for s in sections for v in _values(s["last"], pattern)]
            if values:
                parts.append(f"{name} {max(values):.3f}" if how else f"{name} {_span(values)}")
        cells[mechanism] = "; ".join(parts)
    return cells


def health_markdown(health: dict[str, dict[str, str]], unit: str = "seeds") -> str:
    """The health table: a line per row, a column per mechanism (``—`` where it is absent);
    with ``unit="draws"`` its cells count every run of every draw."""
    names = [m for m, _ in HEALTH_COLUMNS]
    lines = ["| configuration | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for row, cells in health.items():
        lines.append(f"| {row} | " + " | ".join(cells.get(m, "—") for m in names) + " |")
    note = (
        "\nVerdicts of `csetgraph inspect` per seed (seeds giving each); ranges over the seeds "
        "of each run's last epoch (`metrics.json`, section `mechanisms`)."
    )
    if unit == "draws":
        note = (
            "\nVerdicts of `csetgraph inspect` per run, every draw and seed (runs giving "
            "each); ranges over the last epoch of every run (`metrics.json`, section "
            "`mechanisms`)."
        )
    return "\n".join(lines) + "\n" + note


def run_health(out_dir: Path | Sequence[Path], rows: Sequence[str], seeds: Sequence[int]) -> dict:
    """:func:`health_cells` of each row's runs in ``out_dir/<row>/seed<k>`` (several folders:
    the runs of all of them; runs without a ``mechanisms`` section are left out)."""
    out_dirs = [out_dir] if isinstance(out_dir, (str, Path)) else list(out_dir)
    health = {}
    for row in rows:
        sections = []
        for folder, seed in ((f, s) for f in out_dirs for s in seeds):
            metrics = Path(folder) / _slug(row) / f"seed{seed}" / "metrics.json"
            section = json.loads(metrics.read_text()).get("mechanisms")
            if section:
                sections.append(section)
        health[row] = health_cells(sections) if sections else {}
    return health


def write_tables(
    summary: dict,
    reference: str,
    out_dir: Path,
    title: str,
    extra: dict,
    health: dict | None = None,
    unit: str = "seeds",
) -> Path:
    """``table.md`` and ``table.json`` in ``out_dir`` (with ``health``: the health table too,
    :func:`run_health`; ``unit``: :func:`markdown_table`'s); returns the Markdown path."""
    md = f"{title}\n\n{markdown_table(summary, reference, unit=unit)}\n"
    if health:
        md += f"\nMechanism health:\n\n{health_markdown(health, unit)}\n"
    write_atomic(out_dir / "table.md", md)
    payload = {"title": title, "reference": reference, **extra, "rows": summary}
    if health:
        payload["health"] = health
    write_atomic(out_dir / "table.json", json.dumps(payload, indent=2, allow_nan=True))
    return out_dir / "table.md"


def run_table(
    configs: dict[str, Config],
    seeds: Sequence[int],
    out_dir: Path,
    reference: str,
    *,
    title: str,
    extra: dict,
    split: str = "test",
    progress: bool = True,
    reuse: bool = False,
) -> tuple[Path, dict]:
    """One table's whole job: :func:`run_seeds`, :func:`summarise`, :func:`run_health` and
    :func:`write_tables` into ``out_dir`` (the wall time is added to ``title`` and ``extra``).

    Returns:
        The Markdown path and the summary.
    """
    t0 = time.time()
    runs = run_seeds(configs, seeds, out_dir, split=split, progress=progress, reuse=reuse)
    wall = time.time() - t0
    summary = summarise(runs, reference)
    health = run_health(out_dir, list(configs), seeds)
    title = f"{title}, wall time {wall / 60:.1f} min"
    md = write_tables(summary, reference, out_dir, title, {**extra, "wall_seconds": wall}, health)
    return md, summary


def seeded(cfg: Config, seed: int) -> Config:
    """A copy of ``cfg`` trained with ``seed`` (the data set itself stays the same)."""
    out = copy.deepcopy(cfg)
    out.train.seed = seed
    return out


def run_seeds(
    configs: dict[str, Config],
    seeds: Sequence[int],
    out_dir: Path,
    *,
    split: str = "test",
    progress: bool = True,
    train_fn: Callable | None = None,
    reuse: bool = False,
) -> dict[str, dict[int, dict[str, float]]]:
    """Train every configuration with every seed; metrics on ``split`` ids ("test" or "val").

    With ``split="val"`` the model trains on the training ids only
    (``data.train_split=train``) and is scored on the validation ids: the split for
    tuning. Run folders land in ``out_dir/<row>/seed<k>``. With ``reuse`` a run folder that
    already holds a finished run of the same config is read instead of trained again
    (:func:`finished_results`; test ids only).
    """
    if split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' or 'val', got {split!r}")
    if reuse and split != "test":
        raise ConfigError("--reuse reads the test results in metrics.json; use it with test ids")
    if not seeds:
        raise ConfigError("no seeds to run: pass --seeds N with N >= 1")
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for row, base in configs.items():
        runs[row] = {}
        for seed in seeds:
            cfg = seeded(base, seed)
            if split == "val":
                cfg.data.train_split = "train"
            cfg.train.output_dir = str(out_dir / _slug(row))
            cfg.train.run_name = f"seed{seed}"
            done = finished_results(cfg) if reuse else None
            if done is None:
                done = flatten_results(train_and_score(cfg, split, progress, train_fn))
            runs[row][seed] = done
    return runs


def finished_results(cfg: Config) -> dict[str, float] | None:
    """The flat test results of the finished run at ``cfg``'s run folder, or ``None`` when
    there is none (no ``metrics.json``).

    Raises:
        ConfigError: the folder holds a run of another config (the options named).
    """
    from csetgraph.config import load_config
    from csetgraph.engine.run_guard import config_differences, format_differences

    run_dir = Path(cfg.train.output_dir) / cfg.train.run_name
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return None
    diff = config_differences(load_config(run_dir / "config.yaml"), cfg)
    if diff:
        raise ConfigError(
            f"{run_dir} holds a finished run of another config ({format_differences(diff)}); "
            "move it away, or drop --reuse to train it again under a new output folder"
        )
    results = json.loads(metrics.read_text())
    return flatten_results({k: v for k, v in results.items() if k != "mechanisms"})


def train_and_score(cfg: Config, split: str, progress: bool, train_fn=None) -> dict:
    """Train ``cfg``; its protocol's results on ``split`` ids."""
    from csetgraph.engine import train
    from csetgraph.engine.runs import input_stats
    from csetgraph.engine.trainer import evaluate_model

    out = (train_fn or train)(cfg, progress=progress)
    if split == "test":
        return out["results"]
    model = out["model"]
    device = next(model.parameters()).device
    mean, std = input_stats(model, cfg)
    return evaluate_model(model, cfg, device, mean, std, split="val", progress=progress)


def _slug(name: str) -> str:
    return name.replace(" + ", "+").replace(" ", "_").replace("/", "_").replace("=", "-")


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """``"model.se.alpha=0.1,0.3"`` -> ``("model.se.alpha", ["0.1", "0.3"])``."""
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise ConfigError(
            f"cannot read the sweep {text!r}: write key=v1,v2,... e.g. model.se.alpha=0.1,0.5,0.9"
        )
    return key.strip(), items


def plot_sweep(summary: dict[str, dict], key: str, values: list[str], out_dir: Path) -> list[Path]:
    """One PNG per metric: mean against the swept value, error bars of one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [f"{key}={v}" for v in values]
    try:
        xs = [float(v) for v in values]
    except ValueError:  # categorical values: plot at their positions
        xs = list(range(len(values)))
    paths = []
    for metric in next(iter(summary.values())):
        if metric.split("/")[-1] not in TABLE_METRICS:
            continue
        means = [100 * summary[r][metric]["mean"] for r in rows]
        stds = [100 * np.nan_to_num(summary[r][metric]["std"]) for r in rows]
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3)
        ax.set_xticks(xs, values)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"sweep_{_slug(metric)}.png"
        with atomic_path(path, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
