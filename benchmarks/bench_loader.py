#!/usr/bin/env python
"""Training-loader throughput: the PIL path against the tensor path, side by side.

    python benchmarks/bench_loader.py                          # synthetic images, 2 workers
    python benchmarks/bench_loader.py --workers 4 --rounds 7 --batches 30
    python benchmarks/bench_loader.py --root /data/SYSU-MM01   # real images (read only)
    python benchmarks/bench_loader.py --device cuda            # augmentation on the GPU
    python benchmarks/bench_loader.py --tiny                   # a seconds-long smoke run

Both paths produce what the trainer consumes, batches of ``P x K`` aligned visible/infrared
pairs on the device, at 256x128 with the paper's augmentation (pad 10, flip 0.5, random
erasing 0.5), from the same sampler and with the same worker count:

* ``pil``: the reference; each worker decodes, resizes and augments every image with PIL;
* ``tensor``: uint8 images from the decode-once cache, augmented as batched tensor ops (in the
  workers on a CPU run, on the device otherwise).

Each path first runs one untimed epoch (workers start, the page cache warms up; the cache
build is timed on its own, as the one-off cost it is). Then rounds alternate between the paths,
swapping which goes first, so machine-speed drift hits both alike; the table shows the median
and the spread of images/s, and the per-round ratio. ``--train-steps N`` then trains the
synthetic recipe's model (``configs/synthetic.yaml``, at its own 128x64 input) for N steps on
each path and reports the fraction of the step time spent waiting for the next batch. The
last line reads ``loader speedup N.Nx`` (median tensor / median pil).

Without ``--root`` a synthetic SYSU-MM01-layout set is generated once into ``--data-dir``
(default: a folder under the system temp dir), with images larger than the training size so
that the resize is real work, as it is on real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from csetgraph.config import DataConfig, load_config
from csetgraph.data.build import build_train_data
from csetgraph.data.cache import ensure_cache
from csetgraph.data.pipeline import PIPELINES, build_train_loader
from csetgraph.data.samplers import CrossModalityIdentitySampler
from csetgraph.data.synthetic import generate_sysu_mm01
from csetgraph.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from csetgraph.engine.distributed import describe_device, resolve_device
from csetgraph.errors import run_command

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", default="", help="a SYSU-MM01 folder (default: synthetic)")
    parser.add_argument("--data-dir", default="", help="where the synthetic set is generated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ids", type=int, default=8, help="P identities per batch")
    parser.add_argument("--instances", type=int, default=4, help="K pairs per identity")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=10, help="0: skip the wait report")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, auto")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: tiny sizes, 1 round")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batches, args.rounds, args.ids, args.instances = 2, 2, 2, 2
        args.height, args.width, args.train_steps = 64, 32, 2
    return run_command(lambda: run(args), debug=args.debug, name="bench_loader")


def data_config(args, cache_dir: str) -> DataConfig:
    root = args.root or synthetic_root(args)
    return DataConfig(
        root=str(root),
        height=args.height,
        width=args.width,
        num_ids_per_batch=args.ids,
        num_instances=args.instances,
        num_workers=args.workers,
        pad=10,
        flip_prob=0.5,
        erasing_prob=0.5,
        cache_dir=cache_dir,
    )


def synthetic_root(args) -> Path:
    """A synthetic SYSU-MM01 tree with images 1.125x the training size (generated once)."""
    h, w = int(args.height * 1.125), int(args.width * 1.125)
    base = Path(args.data_dir or Path(tempfile.gettempdir()) / "csetgraph-bench-loader")
    root = base / f"sysu-{h}x{w}"
    if not (root / "exp" / "test_id.txt").exists():
        ids = 4 if args.tiny else 24
        generate_sysu_mm01(
            root, num_train_ids=ids, num_val_ids=2, num_test_ids=2,
            images_per_camera=2 if args.tiny else 6, height=h, width=w, seed=0,
        )  # fmt: skip
    return root


def make_loaders(cfg: DataConfig, data, device, batches: int) -> dict:
    loaders = {}
    for name in PIPELINES:
        sampler = CrossModalityIdentitySampler(
            [r.pid for r in data.vis], [r.pid for r in data.ir],
            cfg.num_ids_per_batch, cfg.num_instances, batches_per_epoch=batches,
        )  # fmt: skip
        loaders[name] = build_train_loader(
            dataclasses.replace(cfg, pipeline=name), data.vis, data.ir, sampler, device,
            IMAGENET_MEAN, IMAGENET_STD, progress=False,
        )  # fmt: skip
    return loaders


def sync(device: torch.device) -> None:
    if device.type == "cuda":  # the device must finish the augmentation before the clock stops
        torch.cuda.synchronize(device)


def images_per_second(loader, epoch: int, device: torch.device) -> float:
    loader.set_epoch(epoch)
    sync(device)
    t0, seen = time.perf_counter(), 0
    for vis, ir, _, _ in loader:
        seen += vis.shape[0] + ir.shape[0]
    sync(device)
    return seen / (time.perf_counter() - t0)


def throughput(loaders: dict, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Untimed warm-up epoch each, then ``rounds`` alternating rounds."""
    for loader in loaders.values():
        images_per_second(loader, 0, device)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    names = list(loaders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(images_per_second(loaders[name], r + 1, device))
    return rates


def wait_fraction(loader, model, criterion, optimizer, steps: int, device) -> float:
    """Fraction of the wall time of ``steps`` training steps spent waiting for batches."""
    loader.set_epoch(0)
    it, waited, total = iter(loader), 0.0, 0.0
    next(it)  # untimed: the workers start and fill their queues, as in a long run
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        vis, ir, vis_pid, ir_pid = next(it)
        sync(device)
        t1 = time.perf_counter()
        loss, _ = criterion(model(vis, ir), torch.cat([vis_pid, ir_pid]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        waited, total = waited + (t1 - t0), total + (time.perf_counter() - t0)
    return waited / total


def train_wait(args, cache_dir: str, device) -> dict[str, float]:
    """The synthetic recipe's model and loss, at its own input size, fed by each path."""
    from csetgraph.losses import build_criterion
    from csetgraph.models import build_model

    recipe = load_config(ROOT / "configs" / "synthetic.yaml")
    cfg = dataclasses.replace(
        data_config(args, cache_dir), height=recipe.data.height, width=recipe.data.width
    )
    data = build_train_data(cfg)
    loaders = make_loaders(cfg, data, device, args.train_steps + 1)  # + the warm-up batch
    fractions = {}
    for name, loader in loaders.items():
        torch.manual_seed(0)
        size = (cfg.height, cfg.width)
        model = build_model(recipe.model, data.num_classes, size).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.lr)
        criterion = build_criterion(recipe.loss)
        fractions[name] = wait_fraction(
            loader, model, criterion, optimizer, args.train_steps, device
        )
    return fractions


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.0f}  ({min(values):.0f}-{max(values):.0f})"


def run(args) -> int:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cache_dir = tempfile.mkdtemp(prefix="csetgraph-bench-cache-")
    cfg = data_config(args, cache_dir)
    data = build_train_data(cfg)
    t0 = time.perf_counter()
    paths = [r.path for r in data.vis] + [r.path for r in data.ir]
    ensure_cache(paths, cfg.height, cfg.width, cache_dir, num_workers=cfg.num_workers)
    build = time.perf_counter() - t0
    print(
        f"{len(paths)} training images from {cfg.root}; {args.height}x{args.width}, pad 10, "
        f"flip 0.5, erasing 0.5; batch {2 * args.ids * args.instances} images; "
        f"{args.workers} workers; device {describe_device(device)}"
    )
    print(f"cache build (one-off): {build:.1f}s, {len(paths) / build:.0f} img/s")
    rates = throughput(make_loaders(cfg, data, device, args.batches), args.rounds, device)
    print(f"{'path':8s} {'img/s median (min-max)':>28s}")
    for name, values in rates.items():
        print(f"{name:8s} {spread(values):>28s}")
    ratios = [t / p for t, p in zip(rates["tensor"], rates["pil"], strict=True)]
    print(f"per-round ratio tensor/pil: {' '.join(f'{r:.1f}' for r in ratios)}")
    if args.train_steps:
        fractions = train_wait(args, cache_dir, device)
        print(f"synthetic recipe, {args.train_steps} training steps: time waiting for data")
        for name, frac in fractions.items():
            print(f"{name:8s} {100 * frac:6.1f}% of the step time")
    speedup = statistics.median(rates["tensor"]) / statistics.median(rates["pil"])
    print(f"loader speedup {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
