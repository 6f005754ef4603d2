"""The training loader: batches of augmented visible/infrared pairs on the training device.

Two pipelines, chosen with ``data.pipeline``:

- ``"tensor"`` (default): images come from the decode-once cache (:mod:`csetgraph.data.cache`)
  as uint8 and are augmented as batched tensor ops
  (:class:`~csetgraph.data.batch_transforms.BatchAugment`). On an accelerator the workers only
  slice a memory map; the uint8 batch is copied to the device (pinned memory, ``non_blocking``)
  and augmented there. On a CPU run the workers augment each batch themselves, in parallel with
  the step, since they are the spare CPU. Either way the draws of batch ``k`` of epoch ``e``
  come from a generator seeded with ``(data seed, e, k)``, so the worker count changes nothing
  and a resumed run augments as the uninterrupted one did. Workers stay alive across epochs
  (``persistent_workers``).
- ``"pil"``: the reference. Each worker decodes, resizes and augments every image with PIL and
  torchvision (:func:`~csetgraph.data.transforms.build_train_transform`), with the DataLoader
  the trainer built before this module existed: same batches, same random streams.

Either way :func:`build_train_loader` returns a :class:`TrainLoader` whose iteration yields
``(vis, ir, vis_pid, ir_pid)`` already on the device.

>>> loader = build_train_loader(cfg.data, data.vis, data.ir, sampler, device, mean, std)
>>> for epoch in range(epochs):
...     loader.set_epoch(epoch)
...     for vis, ir, vis_pid, ir_pid in loader:
...         ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from csetgraph.config import DataConfig
from csetgraph.data.batch_transforms import BatchAugment
from csetgraph.data.cache import ImageCache, ensure_cache
from csetgraph.data.torch_datasets import PairedDataset
from csetgraph.data.records import Record
from csetgraph.data.transforms import build_train_transform
from csetgraph.errors import ConfigError

PIPELINES = ("tensor", "pil")


def batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor, in shared memory when made in a DataLoader worker, so that handing it
    to the main process copies nothing: the way torch's ``default_collate`` allocates batches
    (a float batch of 64 images at 256x128 is 25 MB; pickling an ordinary tensor copies it)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    like = torch.empty(0, dtype=dtype)
    storage = like._typed_storage()._new_shared(math.prod(shape))
    return like.new(storage).resize_(shape)


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of batch ``index`` of ``epoch``: independent of the worker that
    makes the batch and of the epoch a run was resumed at."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


class NumberedBatches(Sampler):
    """Yields ``(epoch, index, batch)`` for each batch of ``sampler``: what a worker needs to
    seed the batch's augmentation. The epoch is the sampler's own (``sampler.epoch``, set by
    its ``set_epoch``), so a caller that sets the sampler's epoch sets the augmentation's too."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        for index, batch in enumerate(self.sampler):
            yield epoch, index, batch


class CachedPairs(Dataset):
    """Whole batches of cached pairs: ``dataset[(epoch, index, [(vi, ii), ...])]``.

    Visible image ``vi`` is row ``vi`` of the cache and infrared image ``ii`` is row
    ``num_vis + ii`` (the cache holds the visible records, then the infrared ones). The memory
    map is opened lazily in each process, so workers share the page cache instead of a copy.
    With ``augment`` the batch is augmented here, in the worker (a CPU run: the workers are the
    spare CPU); without, it stays uint8 for the device to augment.

    Shapes:
        output: ``images`` ``(2B, 3, H, W)``, the B visible then the B infrared images (uint8,
        or float32 when augmented); ``pids`` ``(2B,)`` long; the batch's seed.
    """

    def __init__(
        self,
        cache: ImageCache,
        vis_pids: Sequence[int],
        ir_pids: Sequence[int],
        augment: BatchAugment | None = None,
        seed: int = 0,
    ) -> None:
        self.cache, self.augment, self.seed = cache, augment, seed
        self.pids = torch.as_tensor(list(vis_pids) + list(ir_pids), dtype=torch.long)
        self.num_vis = len(vis_pids)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return max(self.num_vis, len(self.pids) - self.num_vis)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # never pickle the map into a worker

    def __getitem__(self, item: tuple[int, int, list[tuple[int, int]]]):
        epoch, index, pairs = item
        if self._array is None:
            self._array = self.cache.open()
        rows = np.array([vi for vi, _ in pairs] + [ii + self.num_vis for _, ii in pairs])
        shape = (len(rows), *self._array.shape[1:])  # (2B, 3, H, W)
        seed = batch_seed(self.seed, epoch, index)
        if self.augment is None:  # uint8 for the device, read straight into the batch tensor
            images = batch_tensor(shape, torch.uint8)
            np.take(self._array, rows, axis=0, out=images.numpy())
        else:
            raw = torch.from_numpy(self._array[rows])  # fancy indexing copies out of the map
            gen = torch.Generator().manual_seed(seed)
            images = self.augment(raw, gen, out=batch_tensor(shape, torch.float32))
        return images, self.pids[torch.from_numpy(rows)], seed


class TrainLoader:
    """Iterates device batches ``(vis, ir, vis_pid, ir_pid)``; one pass is one epoch.

    Args:
        loader: the DataLoader.
        sampler: what :meth:`set_epoch` forwards the epoch to (the batch sampler, or its
            :class:`NumberedBatches` wrapper).
        device: the training device.
        augment: augmentation to run here, on the device, seeded per batch (``None``: the
            batches come augmented, from PIL or from CPU workers).
        cached: the loader yields :class:`CachedPairs` batches ``(images, pids, seed)``;
            false: PIL batches ``(vis, ir, vis_pid, ir_pid)``.
    """

    def __init__(
        self,
        loader: DataLoader,
        sampler: Sampler,
        device: torch.device,
        augment: BatchAugment | None = None,
        *,
        cached: bool = True,
    ) -> None:
        self.loader, self.sampler = loader, sampler
        self.device = torch.device(device)
        self.augment, self.cached = augment, cached
        self.generator = torch.Generator(device=self.device) if augment is not None else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: the sampler's shuffle, and with it the augmentation's seeds."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.loader:
            if not self.cached:  # the PIL path: (vis, ir, vis_pid, ir_pid)
                yield tuple(t.to(self.device, non_blocking=True) for t in batch)
                continue
            images, pids, seed = batch
            images = images.to(self.device, non_blocking=True)
            pids = pids.to(self.device, non_blocking=True)
            if self.augment is not None:
                images = self.augment(images, self.generator.manual_seed(seed))
            vis, ir = images.chunk(2)  # (B, 3, H, W) each
            vis_pid, ir_pid = pids.chunk(2)
            yield vis, ir, vis_pid, ir_pid


def build_train_loader(
    cfg: DataConfig,
    vis_records: Sequence[Record],
    ir_records: Sequence[Record],
    sampler: Sampler,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    seed: int = 0,
    progress: bool = True,
    augment_in_workers: bool | None = None,
) -> TrainLoader:
    """The configured training loader (``data.pipeline``); builds the cache on first use.

    Args:
        cfg: the data config (``pipeline``, sizes, augmentation, ``num_workers``, ``cache_dir``).
        vis_records, ir_records: the training records the sampler's indices point into.
        sampler: a batch sampler of aligned ``(vis, ir)`` index pairs with ``set_epoch`` and
            ``epoch`` (:class:`~csetgraph.data.samplers.CrossModalityIdentitySampler`); setting
            its epoch (directly or through :meth:`TrainLoader.set_epoch`) selects the epoch.
        device: the training device.
        mean, std: the normalisation statistics.
        seed: the augmentation seed (the trainer passes ``train.seed``).
        progress: a progress bar while the cache is built.
        augment_in_workers: where the tensor path augments; ``None``: in the workers on a CPU
            device, on the device otherwise.

    Raises:
        ConfigError: an unknown ``data.pipeline``.
    """
    device = torch.device(device)
    if cfg.pipeline == "pil":
        loader = _pil_loader(cfg, vis_records, ir_records, sampler, device, mean, std)
        return TrainLoader(loader, sampler, device, cached=False)
    if cfg.pipeline != "tensor":
        raise ConfigError(
            f"data.pipeline must be one of {', '.join(PIPELINES)}, got {cfg.pipeline!r}"
        )
    paths = [r.path for r in vis_records] + [r.path for r in ir_records]
    cache = ensure_cache(
        paths,
        cfg.height,
        cfg.width,
        cfg.cache_dir,
        num_workers=cfg.num_workers,
        progress=progress,
    )
    augment = BatchAugment(
        mean,
        std,
        pad=cfg.pad,
        flip_prob=cfg.flip_prob,
        erasing_prob=cfg.erasing_prob,
        grayscale_prob=cfg.grayscale_prob,
    )
    # On a CPU run the workers augment (in parallel with the step); on an accelerator the
    # device does, after a uint8 copy a quarter the size of a float one.
    on_workers = device.type == "cpu" if augment_in_workers is None else augment_in_workers
    dataset = CachedPairs(
        cache,
        [r.pid for r in vis_records],
        [r.pid for r in ir_records],
        augment if on_workers else None,
        seed,
    )
    batches = NumberedBatches(sampler)
    loader = DataLoader(
        dataset,
        sampler=batches,
        batch_size=None,  # the sampler yields whole batches; the dataset returns them stacked
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        # Its own generator: the global RNG (dropout, ...) must not depend on when the
        # workers start, or a resumed run would drift from the uninterrupted one.
        generator=torch.Generator(),
    )
    return TrainLoader(loader, batches, device, None if on_workers else augment)


def _pil_loader(cfg, vis_records, ir_records, sampler, device, mean, std) -> DataLoader:
    """The reference loader, as the trainer built it: PIL transforms in the workers."""
    transform = build_train_transform(
        cfg.height,
        cfg.width,
        mean=mean,
        std=std,
        pad=cfg.pad,
        flip_prob=cfg.flip_prob,
        erasing_prob=cfg.erasing_prob,
        grayscale_prob=cfg.grayscale_prob,
    )
    return DataLoader(
        PairedDataset(vis_records, ir_records, transform),
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )


__all__ = [
    "PIPELINES",
    "CachedPairs",
    "NumberedBatches",
    "TrainLoader",
    "batch_seed",
    "build_train_loader",
]
