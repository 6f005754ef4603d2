"""The training loop: data, model, optimiser, checkpoints, logging and the final evaluation.

Single process by default; under ``torchrun`` each process trains on its own identities
(see :class:`~csetgraph.data.samplers.CrossModalityIdentitySampler`) with
``DistributedDataParallel``. The learning rate is not rescaled with the number of processes:
each process holds ``P x K`` pairs, so ``n`` processes make a global batch ``n`` times the
configured one, and ``train.lr`` applies to it as it stands (scale it yourself, e.g. linearly,
if you change the global batch).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from csetgraph.config import Config, config_to_dict, save_config
from csetgraph.data.build import build_train_data, ensure_dataset
from csetgraph.data.datasets import PairedDataset
from csetgraph.data.samplers import CrossModalityIdentitySampler
from csetgraph.data.transforms import build_test_transform, build_train_transform
from csetgraph.engine.checkpoint import (
    CHECKPOINT_VERSION,
    atomic_save,
    load_checkpoint,
    load_model_state,
    rng_state,
    set_rng_state,
)
from csetgraph.engine.distributed import (
    autocast_context,
    init_distributed,
    resolve_device,
)
from csetgraph.engine.runs import input_stats
from csetgraph.errors import NonFiniteLossError
from csetgraph.losses import build_criterion
from csetgraph.models import build_model

log = logging.getLogger("csetgraph")


def make_run_dir(cfg: Config) -> Path:
    name = cfg.train.run_name or time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.train.output_dir) / name


def build_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    """StepLR(step_size, gamma) per epoch, with an optional linear warm-up (stepped per step)."""
    warm = cfg.train.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        decay = cfg.train.gamma ** (epoch // cfg.train.step_size)
        if warm and step < warm:
            return decay * (step + 1) / warm
        return decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: Config, *, progress: bool = True) -> dict:
    """Train as configured; returns ``{"run_dir", "results", "epochs"}``.

    The run folder holds ``config.yaml`` (the resolved config), ``log.txt``, TensorBoard
    event files, ``checkpoints/last.pt`` (and ``best.pt`` with periodic validation) and
    ``metrics.json``.
    """
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    dist_info = init_distributed("cuda" if cfg.train.device.startswith("cuda") else "cpu")
    device = resolve_device(cfg.train.device, dist_info)
    resume = None
    if cfg.train.resume:
        resume = load_checkpoint(cfg.train.resume)
        run_dir = Path(cfg.train.resume)
        run_dir = run_dir if run_dir.is_dir() else run_dir.parent.parent
    else:
        run_dir = make_run_dir(cfg)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        _setup_logging(run_dir / "log.txt")
    torch.manual_seed(cfg.train.seed)

    if dist_info.is_main:
        ensure_dataset(cfg.data, progress=progress)
    if dist_info.world_size > 1:
        torch.distributed.barrier()
    data = build_train_data(cfg.data)
    img_size = (cfg.data.height, cfg.data.width)
    model = build_model(cfg.model, data.num_classes, img_size).to(device)
    mean, std = input_stats(model, cfg)
    train_tf = build_train_transform(
        *img_size,
        mean=mean,
        std=std,
        pad=cfg.data.pad,
        flip_prob=cfg.data.flip_prob,
        erasing_prob=cfg.data.erasing_prob,
        grayscale_prob=cfg.data.grayscale_prob,
    )
    sampler = CrossModalityIdentitySampler(
        [r.pid for r in data.vis],
        [r.pid for r in data.ir],
        cfg.data.num_ids_per_batch,
        cfg.data.num_instances,
        seed=cfg.train.seed,
        num_replicas=dist_info.world_size,
        rank=dist_info.rank,
    )
    if cfg.train.max_steps_per_epoch:
        sampler.batches_per_epoch = min(sampler.batches_per_epoch, cfg.train.max_steps_per_epoch)
    loader = DataLoader(
        PairedDataset(data.vis, data.ir, train_tf),
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    criterion = build_criterion(cfg.loss)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = build_scheduler(optimizer, cfg, len(sampler))
    start_epoch, best = 0, None
    if resume is not None:
        load_model_state(model, resume["model"], f"checkpoint {cfg.train.resume!r}")
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch = int(resume["epoch"])
        best = resume.get("best")
        set_rng_state(resume["rng"])
        log.info("resumed from %s at epoch %d", cfg.train.resume, start_epoch)
    train_model = model
    if dist_info.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp_ctx, scaler = autocast_context(cfg.train.amp, device)
    writer = _summary_writer(run_dir) if dist_info.is_main else None
    if dist_info.is_main:
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        log.info(
            "training %s on %s: %d ids, %d visible + %d infrared images, %.2f M parameters, "
            "%d steps/epoch, device %s, %d process(es)",
            cfg.model.backbone,
            cfg.data.root,
            data.num_classes,
            len(data.vis),
            len(data.ir),
            n_params,
            len(sampler),
            device,
            dist_info.world_size,
        )

    step = start_epoch * len(sampler)
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        seen, t0 = 0, time.time()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            disable=not (progress and dist_info.is_main),
            leave=False,
        )
        for vis, ir, vis_pid, ir_pid in bar:
            vis, ir = vis.to(device, non_blocking=True), ir.to(device, non_blocking=True)
            pids = torch.cat([vis_pid, ir_pid]).to(device)
            with amp_ctx:
                out = train_model(vis, ir)
                loss, terms = criterion(out, pids)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                    f"terms: { {k: float(v) for k, v in terms.items()} }. The last good "
                    f"checkpoint is {run_dir / 'checkpoints' / 'last.pt'}; lower train.lr or "
                    "use train.amp=off."
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
            step += 1
            seen += vis.shape[0] * 2
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in terms.items()})
            if writer is not None:
                for k, v in terms.items():
                    writer.add_scalar(f"loss/{k}", float(v), step)
        n_batches = max(1, len(sampler))
        means = {k: v / n_batches for k, v in sums.items()}
        elapsed = time.time() - t0
        lr = optimizer.param_groups[0]["lr"]
        throughput = seen * dist_info.world_size / max(elapsed, 1e-9)
        val = None
        if cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0:
            val = _validate(model, cfg, device, mean, std, progress) if dist_info.is_main else None
        if dist_info.is_main:
            terms_txt = " ".join(f"{k} {v:.4f}" for k, v in means.items())
            val_txt = (
                f" | val R-1 {100 * val['rank1']:.2f} mAP {100 * val['mAP']:.2f}" if val else ""
            )
            log.info(
                "epoch %d/%d | %s | lr %.2e | %.1f img/s | %.1fs%s",
                epoch + 1,
                cfg.train.epochs,
                terms_txt,
                lr,
                throughput,
                elapsed,
                val_txt,
            )
            writer.add_scalar("train/lr", lr, epoch + 1)
            writer.add_scalar("train/images_per_second", throughput, epoch + 1)
            for k, v in means.items():
                writer.add_scalar(f"epoch_loss/{k}", v, epoch + 1)
            if val:
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, epoch + 1)
                if best is None or val["mAP"] > best["mAP"]:
                    best = {**val, "epoch": epoch + 1}
                    atomic_save(
                        {"model": model.state_dict(), "epoch": epoch + 1, "val": val},
                        run_dir / "checkpoints" / "best.pt",
                    )
            atomic_save(
                {
                    "version": CHECKPOINT_VERSION,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "best": best,
                    "rng": rng_state(),
                    "config": json.dumps(config_to_dict(cfg)),
                    "num_classes": data.num_classes,
                },
                run_dir / "checkpoints" / "last.pt",
            )
    if writer is not None:
        writer.flush()

    results = {}
    if dist_info.is_main:
        from csetgraph.evaluation.protocols import format_table

        results = evaluate_model(model, cfg, device, mean, std, progress=progress)
        title = f"{cfg.data.dataset}, test identities"
        if cfg.data.dataset == "sysu_mm01":
            title = "SYSU-MM01 protocol, infrared -> visible, test identities"
        table = format_table(results, title=title)
        log.info("final evaluation (%s)\n%s", run_dir, table)
        (run_dir / "metrics.json").write_text(json.dumps(results, indent=2))
        for mode, res in results.items():
            for k, v in res["mean"].items():
                writer.add_scalar(f"test_{mode}/{k}", v, cfg.train.epochs)
        writer.close()
    if dist_info.world_size > 1:
        torch.distributed.barrier()
    return {"run_dir": run_dir, "results": results, "epochs": cfg.train.epochs, "model": model}


def evaluate_model(model, cfg: Config, device, mean, std, *, split="test", progress=True) -> dict:
    """The configured data set's test protocol (all its modes/directions and trials)."""
    from csetgraph.evaluation.protocols import evaluate_dataset

    tf = build_test_transform(cfg.data.height, cfg.data.width, mean=mean, std=std)
    return evaluate_dataset(model, cfg, device=device, transform=tf, split=split, progress=progress)


def _validate(model, cfg: Config, device, mean, std, progress) -> dict[str, float]:
    """Validation metrics on the validation identities (first mode), for model selection."""
    if cfg.data.train_split == "train+val":
        log.warning(
            "validating on val ids that are also trained on (data.train_split=train+val); "
            "use data.train_split=train for model selection"
        )
    res = evaluate_model(model, cfg, device, mean, std, split="val", progress=progress)
    first = next(iter(res.values()))
    return first["mean"]


def _summary_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _setup_logging(path: Path) -> None:
    logger = logging.getLogger("csetgraph")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(), logging.FileHandler(path)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False


__all__ = ["NonFiniteLossError", "evaluate_model", "train"]
