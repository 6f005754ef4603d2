"""Training curves of a run folder: every loss term, the learning rate, validation metrics.

The scalars come from the run's TensorBoard event files (``<run>/tensorboard``, read with
TensorBoard's ``EventAccumulator``; a resumed run's several files are merged, TensorBoard
dropping the steps a restart repeated). Runs without event files fall back to the epoch
lines of ``log.txt`` (epoch means of the loss terms, learning rate, validation Rank-1/mAP).

Tags written by :func:`csetgraph.engine.trainer.train`: ``loss/<term>`` every
``train.log_every`` steps (the mean over those steps); ``epoch_loss/<term>``, ``train/lr``
(the epoch's last rate), ``train/lr_first`` and ``train/images_per_second`` per epoch;
``val/<metric>`` per validated epoch (fractions); ``test_<mode>/<metric>`` after training.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from csetgraph.errors import RunFolderError

__all__ = ["parse_log", "plot_curves", "read_scalars"]

Scalars = dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values)
#: Retrieval metrics drawn in the validation panel, with their labels.
_METRICS = {"rank1": "R-1", "mAP": "mAP", "mINP": "mINP"}
#: Tags whose steps are epochs (where the final test stars go).
_EPOCH_TAGS = ("epoch_loss/", "val/", "train/lr")

_EPOCH_LINE = re.compile(
    r"epoch (?P<epoch>\d+)/\d+ \| (?P<terms>[^|]*) \| lr (?P<lr>[-+0-9.eE]+) \|"
    r"(?: from lr (?P<lr_first>[-+0-9.eE]+) \|)?"
    r"(?:.*\| val R-1 (?P<r1>[-0-9.]+) mAP (?P<map>[-0-9.]+))?"
)


def parse_log(text: str) -> Scalars:
    """Scalars of the epoch lines of a ``log.txt`` (same tags as the event files).

    ``epoch_loss/<term>``, ``train/lr`` (the epoch's last rate) and ``train/lr_first`` per
    epoch, ``val/rank1`` and ``val/mAP`` (as fractions) where the line has them. A resumed
    run's repeated epochs keep the last value.
    """
    series: dict[str, dict[int, float]] = {}
    for line in text.splitlines():
        m = _EPOCH_LINE.search(line)
        if m is None:
            continue
        epoch = int(m["epoch"])
        words = m["terms"].split()
        for name, value in zip(words[::2], words[1::2], strict=False):
            series.setdefault(f"epoch_loss/{name}", {})[epoch] = float(value)
        series.setdefault("train/lr", {})[epoch] = float(m["lr"])
        # The rate the epoch started with (warm-up); the line omits it when it did not change.
        first = m["lr_first"] if m["lr_first"] is not None else m["lr"]
        series.setdefault("train/lr_first", {})[epoch] = float(first)
        if m["r1"] is not None:
            series.setdefault("val/rank1", {})[epoch] = float(m["r1"]) / 100
            series.setdefault("val/mAP", {})[epoch] = float(m["map"]) / 100
    return {
        tag: (np.array(sorted(d)), np.array([d[s] for s in sorted(d)])) for tag, d in series.items()
    }


def read_scalars(run_dir: str | Path, *, source: str = "auto") -> Scalars:
    """Every scalar series of a run folder: ``{tag: (steps, values)}``, steps increasing.

    Args:
        run_dir: the run folder (``train.output_dir/train.run_name``).
        source: ``"tensorboard"``, ``"log"``, or ``"auto"`` (the event files when there are
            any, else ``log.txt``).
    """
    run_dir = Path(run_dir)
    if source not in ("auto", "tensorboard", "log"):
        raise ValueError(f"source must be auto, tensorboard or log, got {source!r}")
    tb = run_dir / "tensorboard"
    has_events = tb.is_dir() and any(tb.glob("events.out.tfevents.*"))
    if source == "tensorboard" or (source == "auto" and has_events):
        if not has_events:
            raise RunFolderError(
                f"no TensorBoard event files in {str(tb)!r}; use --source log (log.txt) or "
                "--source auto"
            )
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
        acc.Reload()
        out = {}
        for tag in acc.Tags()["scalars"]:
            last: dict[int, float] = {}
            for ev in acc.Scalars(tag):  # in file order: a later write of a step wins
                last[int(ev.step)] = float(ev.value)
            steps = sorted(last)
            out[tag] = (np.array(steps), np.array([last[s] for s in steps]))
        return out
    log = run_dir / "log.txt"
    if not log.is_file():
        raise RunFolderError(
            f"{str(run_dir)!r} has neither TensorBoard event files (tensorboard/) nor a "
            "log.txt; pass a run folder written by csetgraph train"
        )
    return parse_log(log.read_text())


def _plot_series(ax, scalars: Scalars, prefix: str, *, scale: float = 1.0) -> int:
    tags = sorted(t for t in scalars if t.startswith(prefix))
    for tag in tags:
        steps, values = scalars[tag]
        name = tag[len(prefix) :]
        ax.plot(
            steps,
            values * scale,
            marker="o" if len(steps) < 30 else None,
            ms=3,
            lw=2.0 if name == "total" else 1.2,
            label=name,
        )
    return len(tags)


def _note(ax, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=9,
        color="dimgray",
        wrap=True,
    )


def plot_curves(
    scalars: Scalars,
    *,
    title: str = "",
    figsize: tuple[float, float] = (12.0, 8.0),
    dpi: int = 100,
) -> Figure:
    """Four panels: loss terms per step, epoch-mean loss terms, learning rate, validation.

    The learning-rate panel shows each epoch's last rate and, where it differs (warm-up),
    its first. The validation panel shows the Rank-1, mAP and mINP of ``val/*`` in percent
    per epoch, and the final test ones (``test_<mode>/*``) as stars at the last epoch, in
    the same colour per metric.
    """
    fig = Figure(figsize=figsize, dpi=dpi)
    axes = fig.subplots(2, 2)
    (a_step, a_epoch), (a_lr, a_val) = axes
    _loss_panel(
        a_step, scalars, "loss/", "no per-step losses\n(not in log.txt; use the event files)"
    )
    a_step.set(title="training loss per step", xlabel="step", ylabel="loss")
    _loss_panel(a_epoch, scalars, "epoch_loss/", "no epoch losses recorded")
    a_epoch.set(title="training loss, epoch mean", xlabel="epoch", ylabel="loss")
    _lr_panel(a_lr, scalars)
    _validation_panel(a_val, scalars)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        xs = [x for line in ax.lines for x in np.asarray(line.get_xdata(), dtype=float)]
        if xs and max(xs) - min(xs) < 2:  # one or two epochs/steps: a readable integer axis
            ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _loss_panel(ax, scalars: Scalars, prefix: str, empty: str) -> None:
    if _plot_series(ax, scalars, prefix):
        ax.legend(title="term", fontsize=8)
        _maybe_log(ax, scalars, prefix)
    else:
        _note(ax, empty)


def _lr_panel(ax, scalars: Scalars) -> None:
    """The rate each epoch ended with, and the one it started with where they differ."""
    if "train/lr" not in scalars:
        _note(ax, "no learning rate recorded")
    else:
        steps, values = scalars["train/lr"]
        marker = "o" if len(steps) < 30 else None
        ax.plot(steps, values, marker=marker, ms=3, color="tab:purple", label="end of epoch")
        first = scalars.get("train/lr_first")
        if first is not None and not np.allclose(first[1], values[: len(first[1])]):
            ax.plot(*first, marker=marker, ms=3, ls="--", color="tab:orange", label="start")
            ax.legend(fontsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set(title="learning rate", xlabel="epoch", ylabel="lr")


def _validation_panel(ax, scalars: Scalars) -> None:
    """Validation metrics per epoch (lines), final test metrics (stars at the last epoch)."""
    ends = [int(v[0].max()) for t, v in scalars.items() if t.startswith(_EPOCH_TAGS)]
    last_epoch = max(ends, default=None)
    n_val = 0
    for i, metric in enumerate(_METRICS):
        colour, label = f"C{i}", _METRICS[metric]
        if f"val/{metric}" in scalars:
            steps, values = scalars[f"val/{metric}"]
            marker = "o" if len(steps) < 30 else None
            ax.plot(steps, values * 100, marker=marker, ms=3, color=colour, label=f"val {label}")
            n_val += 1
        for tag in sorted(t for t in scalars if t.startswith("test_") and t.endswith(f"/{metric}")):
            steps, values = scalars[tag]
            x = steps if last_epoch is None else np.full_like(steps, last_epoch)
            mode = tag.split("/")[0][len("test_") :]
            star = dict(marker="*", ms=10, ls="", markeredgecolor="black", markeredgewidth=0.5)
            ax.plot(x, values * 100, color=colour, label=f"test {mode} {label}", **star)
            n_val += 1
    if n_val:
        ax.legend(fontsize=8, ncol=2 if n_val > 6 else 1, loc="best")
    title = "validation (lines) and final test (stars)"
    if not any(t.startswith("val/") for t in scalars):
        title += "\nno validation during training (train.eval_every=0)"
    ax.set(title=title, xlabel="epoch", ylabel="%")


def _maybe_log(ax, scalars: Scalars, prefix: str) -> None:
    """Log scale when the terms are positive and span more than a factor of 20."""
    values = np.concatenate([scalars[t][1] for t in scalars if t.startswith(prefix)])
    values = values[np.isfinite(values)]
    if (
        len(values)
        and values.min() > 0
        and math.log10(values.max() / values.min()) > math.log10(20)
    ):
        ax.set_yscale("log")
