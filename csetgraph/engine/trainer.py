"""The training loop as a few named stages: set up, train an epoch, log it, save, evaluate.

:class:`Trainer` holds what the stages share; :func:`train` runs them in order::

    setup()                         process, config, data, model, optimiser, resume, run folder
    for each epoch:
        train_epoch()               the steps; loss terms stay on the device between log points
        validate()                  optional (train.eval_every), for best.pt
        log_epoch()                 log.txt lines (loss terms, mechanism health), TensorBoard
        save_checkpoints()          last.pt (and best.pt), atomically
    evaluate()                      the test protocol, metrics.json

Single process by default; under ``torchrun`` each process trains on its own identities
(see :class:`~csetgraph.data.samplers.CrossModalityIdentitySampler`) with
``DistributedDataParallel``. The learning rate is not rescaled with the number of processes:
each process holds ``P x K`` pairs, so ``n`` processes make a global batch ``n`` times the
configured one, and ``train.lr`` applies to it as it stands (scale it yourself, e.g. linearly,
if you change the global batch).

Nothing is written before the config, the data layout, the model and the checkpoint (on resume)
have been checked: a start that fails leaves no run folder behind and an existing one unchanged.

Mechanism health (:mod:`csetgraph.engine.health`) rides along with the loss terms: each step's
statistics stay on the device and are read back at the same log points; they go to TensorBoard
(``mechanisms/...``), to one ``log.txt`` line per epoch and to the ``mechanisms`` section of
``metrics.json`` (kept in ``last.pt`` across a resume).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from csetgraph.config import Config, config_from_dict, config_to_dict, save_config
from csetgraph.data import compare_fingerprints, dataset_fingerprint
from csetgraph.data.build import build_train_data, ensure_dataset
from csetgraph.data.pipeline import TrainLoader, build_train_loader
from csetgraph.data.samplers import CrossModalityIdentitySampler
from csetgraph.engine import health as mech
from csetgraph.engine import run_guard as rf
from csetgraph.engine.averaging import build_weight_average
from csetgraph.engine.distributed import (
    autocast_context,
    describe_device,
    setup_process,
    teardown_process,
    wrap_ddp,
)
from csetgraph.engine.runs import eval_transform, input_stats, run_folder
from csetgraph.engine.training_state import (
    CHECKPOINT_VERSION,
    atomic_save,
    check_resumable_checkpoint,
    load_checkpoint,
    load_model_state,
    rng_state,
    set_rng_state,
)
from csetgraph.errors import CheckpointError, NonFiniteLossError
from csetgraph.files import write_atomic
from csetgraph.losses import build_criterion
from csetgraph.models import build_model, check_input_size, patch_size

log = logging.getLogger("csetgraph")


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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Adam parameter groups after timm: no weight decay on 1-D tensors (norms, biases) nor
    on the names in ``model.no_weight_decay()`` (position embedding, class token, ...)."""
    skip = set(getattr(model, "no_weight_decay", set)())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_sampler(data, cfg: Config, world_size: int = 1, rank: int = 0):
    """The identity sampler training draws its batches from (capped by max_steps_per_epoch)."""
    sampler = CrossModalityIdentitySampler(
        [r.pid for r in data.vis],
        [r.pid for r in data.ir],
        cfg.data.num_ids_per_batch,
        cfg.data.num_instances,
        seed=cfg.train.seed,
        num_replicas=world_size,
        rank=rank,
    )
    if cfg.train.max_steps_per_epoch:
        sampler.batches_per_epoch = min(sampler.batches_per_epoch, cfg.train.max_steps_per_epoch)
    return sampler


def format_lr(first: float, last: float) -> str:
    """``lr 1.00e-03``; an epoch whose rate changed (warm-up) also shows where it started."""
    if math.isclose(first, last, rel_tol=1e-9):
        return f"lr {last:.2e}"
    return f"lr {last:.2e} | from lr {first:.2e}"


@dataclass
class EpochStats:
    """What one epoch of training measured (the learning rates are the ones it trained with)."""

    means: dict[str, float]
    lr_first: float
    lr_last: float
    images_per_second: float
    seconds: float
    mechanisms: dict[str, float] = field(default_factory=dict)  # epoch means (engine.health)


class _Window:
    """Sums of the loss, its terms and the mechanism statistics over the steps since the last
    read, kept on the device."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.loss: torch.Tensor | None = None
        self.terms: dict[str, torch.Tensor] = {}
        self.health: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(
        self,
        loss: torch.Tensor,
        terms: dict[str, torch.Tensor],
        health: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.loss = loss if self.loss is None else self.loss + loss
        for sums, new in ((self.terms, terms), (self.health, health or {})):
            for k, v in new.items():
                sums[k] = sums[k] + v if k in sums else v
        self.count += 1

    def read(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """The sums as Python numbers: one device-to-host copy for all of them."""
        tensors = (self.loss, *self.terms.values(), *self.health.values())
        values = torch.stack([t.float() for t in tensors]).tolist()
        n = 1 + len(self.terms)
        terms = dict(zip(self.terms, values[1:n], strict=True))
        return values[0], terms, dict(zip(self.health, values[n:], strict=True))


class Trainer:
    """One training run; :meth:`fit` runs the stages (see the module docstring)."""

    def __init__(self, cfg: Config, *, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.resume: dict | None = None
        self.resume_changes: dict[str, list] = {}
        self.lock: rf.RunLock | None = None
        self.writer = None
        self.start_epoch, self.step, self.best = 0, 0, None
        self.average = None  # the weight average (train.ema_decay), built with the optimiser
        #: Mechanism health: per-epoch means (``{"epoch", "stats"}``) and the static facts.
        self.mechanisms: list[dict] = []
        self.mechanism_static: dict = {}
        self._health_totals: dict[str, float] = {}  # the epoch's sums, reset by train_epoch

    # ---------------------------------------------------------------------- setup

    def setup(self) -> None:
        """Check everything, build everything, and only then open the run folder."""
        if self.cfg.train.num_threads:
            torch.set_num_threads(self.cfg.train.num_threads)
        self.dist, self.device = setup_process(self.cfg.train.device)
        self._plan_run()
        check_input_size(self.cfg.model, self.cfg.data.height, self.cfg.data.width)
        torch.manual_seed(self.cfg.train.seed)
        if self.dist.is_main:
            ensure_dataset(self.cfg.data, progress=self.progress)
        if self.dist.world_size > 1:
            torch.distributed.barrier()
        self.data = build_train_data(self.cfg.data, min_side=patch_size(self.cfg.model))
        self.fingerprint = _fingerprint(self.cfg) if self.dist.is_main else None
        self._build_model()
        self.loader = self._build_loader()
        self._build_optimiser()
        if self.resume is not None:
            self._restore()
            set_rng_state(self.resume["rng"])
        self._wrap_for_training()
        if self.dist.is_main:
            self._open_run_folder()

    def _plan_run(self) -> None:
        """The run folder and, on resume, the checkpoint and effective config; no writes."""
        cfg = self.cfg
        if not cfg.train.resume:
            self.run_dir = rf.planned_run_dir(cfg)
            if self.dist.is_main:
                rf.check_new_run_dir(self.run_dir, cfg.train.overwrite)
            return
        rf.check_resumable(cfg.train.resume)
        self.run_dir = run_folder(cfg.train.resume)
        if self.dist.is_main:  # other ranks would see the main process's own lock
            rf.check_unlocked(self.run_dir)
        self.resume = load_checkpoint(cfg.train.resume)
        check_resumable_checkpoint(self.resume, cfg.train.resume)
        saved = config_from_dict(json.loads(self.resume["config"]))
        self.cfg, self.resume_changes = rf.resume_config(saved, cfg)

    def _build_model(self) -> None:
        cfg = self.cfg
        img_size = (cfg.data.height, cfg.data.width)
        self.model = build_model(cfg.model, self.data.num_classes, img_size).to(self.device)
        self.mean, self.std = input_stats(self.model, cfg)

    def _build_loader(self) -> TrainLoader:
        """The training batches: the identity sampler and the configured loader
        (``data.pipeline``: the decode-once cache with batched augmentation, or PIL)."""
        cfg = self.cfg
        self.sampler = build_sampler(self.data, cfg, self.dist.world_size, self.dist.rank)
        return build_train_loader(
            cfg.data,
            self.data.vis,
            self.data.ir,
            self.sampler,
            self.device,
            self.mean,
            self.std,
            seed=cfg.train.seed,
            progress=self.progress and self.dist.is_main,
        )

    def _build_optimiser(self) -> None:
        cfg = self.cfg
        self.criterion = build_criterion(cfg.loss)
        groups = param_groups(self.model, cfg.train.weight_decay)
        self.optimizer = torch.optim.Adam(groups, lr=cfg.train.lr)
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.sampler))
        self.amp_ctx, self.scaler = autocast_context(cfg.train.amp, self.device)
        self.average = build_weight_average(self.model, cfg.train.ema_decay)

    @property
    def retrieval_model(self) -> torch.nn.Module:
        """What the run validates, evaluates and returns: the weight average when
        ``train.ema_decay`` keeps one, else the training weights."""
        return self.model if self.average is None else self.average.module

    def _restore(self) -> None:
        """Load the checkpoint's states (a mismatch is a CheckpointError, before any write)."""
        ckpt, origin = self.resume, f"checkpoint {self.cfg.train.resume!r}"
        load_model_state(self.model, ckpt["model"], origin)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as err:
            raise CheckpointError(f"{origin}: its optimiser state does not fit ({err})") from err
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.average is not None:
            self.average.load_state_dict(ckpt, origin)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.best = ckpt.get("best")
        recorded = ckpt.get("mechanisms") or {}
        self.mechanisms = list(recorded.get("epochs", []))
        self.mechanism_static = dict(recorded.get("static", {}))
        self.step = self.start_epoch * len(self.sampler)

    def _open_run_folder(self) -> None:
        """The first write: folder, lock, config.yaml (new runs only), log file."""
        if self.resume is None and self.cfg.train.overwrite:
            rf.check_unlocked(self.run_dir)
            rf.move_aside(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = rf.acquire_lock(self.run_dir)
        for folder in (self.run_dir, self.run_dir / "checkpoints"):
            rf.remove_stale_temporaries(folder)
        if self.resume is None:
            save_config(self.cfg, self.run_dir / "config.yaml")
            _write_json(self.run_dir / "fingerprint.json", {"train": self.fingerprint})
        _setup_logging(self.run_dir / "log.txt")
        self._check_same_data()
        if self.resume is not None:
            log.info("resumed from %s at epoch %d", self.cfg.train.resume, self.start_epoch)
            if self.resume_changes:
                rf.record_resume(self.run_dir, self.start_epoch, self.resume_changes)
        self.writer = _summary_writer(self.run_dir)
        self._log_start()

    def _check_same_data(self) -> None:
        """On resume, warn when the data set is not the one the run started on."""
        path = self.run_dir / "fingerprint.json"
        if self.resume is None or not path.is_file():
            return
        recorded = json.loads(path.read_text()).get("train") or {}
        changes = compare_fingerprints(recorded, self.fingerprint)
        if changes:
            log.warning("the data set differs from the one this run started on: %s",
                        "; ".join(changes))  # fmt: skip

    def _wrap_for_training(self) -> None:
        """DDP and torch.compile wrap the modules the steps call; checkpoints keep the bare ones."""
        self.train_model = wrap_ddp(
            self.model, self.dist, self.device, sync_bn=self.cfg.train.sync_bn
        )
        if self.cfg.train.compile:
            self.train_model = torch.compile(self.train_model)
            self.criterion = torch.compile(self.criterion)

    def _log_start(self) -> None:
        cfg, data = self.cfg, self.data
        log.info(
            "training %s on %s: %d ids, %d visible + %d infrared images, %.2f M parameters, "
            "%d steps/epoch, device %s, %d process(es)",
            cfg.model.backbone,
            cfg.data.root,
            data.num_classes,
            len(data.vis),
            len(data.ir),
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            len(self.sampler),
            describe_device(self.device),
            self.dist.world_size,
        )

    # ---------------------------------------------------------------------- one epoch

    def _step(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """One optimiser step; returns the loss, its terms and the mechanism statistics,
        detached, still on the device."""
        vis, ir, vis_pid, ir_pid = (t.to(self.device, non_blocking=True) for t in batch)
        pids = torch.cat([vis_pid, ir_pid])
        with self.amp_ctx:
            out = self.train_model(vis, ir)
            loss, terms, loss_stats = self.criterion(out, pids, return_stats=True)
        health = mech.step_statistics(out, terms, loss_stats)
        if not self.mechanism_static:
            self.mechanism_static = mech.static_info(out, self.cfg.loss.margin)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        return loss.detach(), {k: v.detach() for k, v in terms.items()}, health

    def train_epoch(self, epoch: int) -> EpochStats:
        """The epoch's steps. Loss terms are summed on the device and read back only every
        ``train.log_every`` steps and at the end, where a non-finite loss stops the run."""
        self.sampler.set_epoch(epoch)
        self.model.train()
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            disable=not (self.progress and self.dist.is_main),
            leave=False,
        )
        totals: dict[str, float] = {}
        self._health_totals = {}
        window = _Window()
        lr_first, seen, t0, n = self.optimizer.param_groups[0]["lr"], 0, time.time(), 0
        lr_last = lr_first
        for batch in bar:
            lr_last = self.optimizer.param_groups[0]["lr"]  # the rate this step trains with
            window.add(*self._step(batch))
            self.step, n, seen = self.step + 1, n + 1, seen + batch[0].shape[0] * 2
            if window.count == self.cfg.train.log_every:
                self._flush(window, totals, epoch, bar)
        if window.count:
            self._flush(window, totals, epoch, bar)
        elapsed = time.time() - t0
        means = {k: v / max(1, n) for k, v in totals.items()}
        rate = seen * self.dist.world_size / max(elapsed, 1e-9)
        health = {k: v / max(1, n) for k, v in self._health_totals.items()}
        return EpochStats(means, lr_first, lr_last, rate, elapsed, health)

    def _flush(self, window: _Window, totals: dict[str, float], epoch: int, bar) -> None:
        """Read the window's sums back (one host sync), check the loss, report the terms."""
        loss, terms, health = window.read()
        if not math.isfinite(loss):
            last = self.run_dir / "checkpoints" / "last.pt"
            then = (
                f"the last good checkpoint is {last}: resume from it with "
                f"train.resume={self.run_dir}"
                if last.is_file()
                else "no checkpoint was written yet: start the run again"
            )
            raise NonFiniteLossError(
                f"the loss became non-finite by epoch {epoch + 1}, step {self.step} (sums of "
                f"the last {window.count} steps: {terms}): lower train.lr (now "
                f"{self.cfg.train.lr:g}), use train.amp=off, or check data.mean and data.std; "
                f"{then}"
            )
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + v
        for k, v in health.items():
            self._health_totals[k] = self._health_totals.get(k, 0.0) + v
        means = {k: v / window.count for k, v in terms.items()}
        health_means = {k: v / window.count for k, v in health.items()}
        window.clear()
        bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"loss/{k}", v, self.step)
            for k, v in health_means.items():
                self.writer.add_scalar(f"mechanisms/{k}", v, self.step)

    # ---------------------------------------------------------------------- after an epoch

    def validate(self, epoch: int) -> dict[str, float] | None:
        """Validation metrics every ``train.eval_every`` epochs (main process), else None."""
        every = self.cfg.train.eval_every
        if not (every and (epoch + 1) % every == 0 and self.dist.is_main):
            return None
        if self.cfg.data.train_split == "train+val":
            log.warning(
                "validating on val ids that are also trained on (data.train_split=train+val); "
                "use data.train_split=train for model selection"
            )
        res = evaluate_model(
            self.retrieval_model, self.cfg, self.device, self.mean, self.std, split="val",
            progress=self.progress,
        )  # fmt: skip
        return next(iter(res.values()))["mean"]

    def log_epoch(self, epoch: int, stats: EpochStats, val: dict | None) -> None:
        """One log.txt line and the epoch's TensorBoard scalars (main process)."""
        if not self.dist.is_main:
            return
        terms = " ".join(f"{k} {v:.4f}" for k, v in stats.means.items())
        val_txt = f" | val R-1 {100 * val['rank1']:.2f} mAP {100 * val['mAP']:.2f}" if val else ""
        log.info(
            "epoch %d/%d | %s | %s | %.1f img/s | %.1fs%s",
            epoch + 1,
            self.cfg.train.epochs,
            terms,
            format_lr(stats.lr_first, stats.lr_last),
            stats.images_per_second,
            stats.seconds,
            val_txt,
        )
        if stats.mechanisms:
            self.mechanisms.append({"epoch": epoch + 1, "stats": stats.mechanisms})
            summary = mech.summary_line(stats.mechanisms)
            log.info("mechanisms %d/%d | %s", epoch + 1, self.cfg.train.epochs, summary)
        w, x = self.writer, epoch + 1
        w.add_scalar("train/lr", stats.lr_last, x)
        w.add_scalar("train/lr_first", stats.lr_first, x)
        w.add_scalar("train/images_per_second", stats.images_per_second, x)
        for k, v in stats.means.items():
            w.add_scalar(f"epoch_loss/{k}", v, x)
        for k, v in (val or {}).items():
            w.add_scalar(f"val/{k}", v, x)

    def save_checkpoints(self, epoch: int, val: dict | None) -> None:
        """``best.pt`` when validation improved (ties keep the earlier), then ``last.pt``."""
        if not self.dist.is_main:
            return
        folder = self.run_dir / "checkpoints"
        average = {} if self.average is None else self.average.state_dict()
        if val and (self.best is None or val["mAP"] > self.best["mAP"]):
            self.best = {**val, "epoch": epoch + 1}
            best = {"version": CHECKPOINT_VERSION, "model": self.model.state_dict(), **average}
            _save(best | {"epoch": epoch + 1, "val": val}, folder / "best.pt", folder)
        state = {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch + 1,
            "best": self.best,
            "rng": rng_state(),
            "config": json.dumps(config_to_dict(self.cfg)),
            "num_classes": self.data.num_classes,
            "mechanisms": {"epochs": self.mechanisms, "static": self.mechanism_static},
            **average,
        }
        _save(state, folder / "last.pt", folder)

    def evaluate(self) -> dict:
        """The test protocol on the final model; ``metrics.json`` (main process)."""
        if not self.dist.is_main:
            return {}
        from csetgraph.evaluation.protocols import format_table

        results = evaluate_model(
            self.retrieval_model, self.cfg, self.device, self.mean, self.std,
            progress=self.progress,
        )  # fmt: skip
        title = f"{self.cfg.data.dataset}, test identities"
        if self.cfg.data.dataset == "sysu_mm01":
            title = "SYSU-MM01 protocol, infrared -> visible, test identities"
        log.info("final evaluation (%s)\n%s", self.run_dir, format_table(results, title=title))
        section = mech.mechanisms_section(self.mechanisms, self.mechanism_static)
        _write_json(self.run_dir / "metrics.json", {**results, "mechanisms": section})
        path = self.run_dir / "fingerprint.json"
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        _write_json(path, {**recorded, "eval": _fingerprint(self.cfg)})
        for mode, res in results.items():
            for k, v in res["mean"].items():
                self.writer.add_scalar(f"test_{mode}/{k}", v, self.cfg.train.epochs)
        return results

    # ---------------------------------------------------------------------- the whole run

    def fit(self) -> dict:
        """Set up, train every remaining epoch, evaluate; the lock is released however it ends."""
        try:
            self.setup()
            for epoch in range(self.start_epoch, self.cfg.train.epochs):
                stats = self.train_epoch(epoch)
                val = self.validate(epoch)
                self.log_epoch(epoch, stats, val)
                self.save_checkpoints(epoch, val)
            if self.writer is not None:
                self.writer.flush()
            results = self.evaluate()
            if self.dist.world_size > 1:
                torch.distributed.barrier()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self._interrupted_message()) from None
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.lock is not None:
                self.lock.release()
                _close_logging()
            teardown_process()
        return {"run_dir": self.run_dir, "results": results, "epochs": self.cfg.train.epochs,
                "model": self.retrieval_model}  # fmt: skip

    def _interrupted_message(self) -> str:
        last = getattr(self, "run_dir", Path("?")) / "checkpoints" / "last.pt"
        if last.is_file():
            return f"the last checkpoint is {last}; resume with train.resume={last.parent.parent}"
        return "no checkpoint was written yet"


def train(cfg: Config, *, progress: bool = True) -> dict:
    """Train as configured; returns ``{"run_dir", "results", "epochs", "model"}``.

    The run folder holds ``config.yaml`` (the resolved config), ``log.txt``, TensorBoard
    event files, ``checkpoints/last.pt`` (and ``best.pt`` with periodic validation),
    ``metrics.json`` (the evaluation results per mode, and the ``mechanisms`` health section),
    and while the run is live, ``run.lock``.

    Raises:
        RunFolderError: the run folder holds a run (resume it, rename, or overwrite) or is in use.
        ConfigError: a resume asks for options the run was not trained with.
        CheckpointError: the resumed checkpoint does not fit, or a checkpoint cannot be written.
        NonFiniteLossError: the loss became NaN or infinite (the last good checkpoint stays).
    """
    return Trainer(cfg, progress=progress).fit()


def evaluate_model(model, cfg: Config, device, mean, std, *, split="test", progress=True) -> dict:
    """The configured data set's test protocol (all its modes/directions and trials)."""
    from csetgraph.evaluation.protocols import evaluate_dataset

    tf = eval_transform(model, cfg, mean=mean, std=std)
    return evaluate_dataset(model, cfg, device=device, transform=tf, split=split, progress=progress)


def _fingerprint(cfg: Config) -> dict:
    """The data set's fingerprint summary (see :func:`csetgraph.data.dataset_fingerprint`)."""
    return dataset_fingerprint(cfg.data.root, cfg.data.dataset, cfg.data.trial).to_dict()


def _save(obj, path: Path, folder: Path) -> None:
    """An atomic checkpoint write; a failed one (full disk, ...) keeps the previous file."""
    try:
        atomic_save(obj, path)
    except Exception as exc:
        err = _os_error_in(exc)
        if err is None:
            raise
        raise CheckpointError(
            f"could not write {path} ({err.strerror or err}); the previous checkpoints in "
            f"{folder} are intact. Free some space, then resume with "
            f"train.resume={folder.parent}"
        ) from err


def _os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: torch.save reports a failed write (full disk, I/O error)
    as a RuntimeError from its zip writer, with the OSError as its context."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2))


def _summary_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _setup_logging(path: Path) -> None:
    """The run's messages go to the console and ``log.txt`` (until :func:`_close_logging`)."""
    logger = logging.getLogger("csetgraph")
    logger.setLevel(logging.INFO)
    _close_logging()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(), logging.FileHandler(path)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False


def _close_logging() -> None:
    """Detach the run's handlers, so a later run (same process) never writes to this log."""
    logger = logging.getLogger("csetgraph")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = True


__all__ = [
    "EpochStats",
    "NonFiniteLossError",
    "Trainer",
    "build_sampler",
    "build_scheduler",
    "evaluate_model",
    "format_lr",
    "param_groups",
    "train",
]
