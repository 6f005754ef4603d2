"""Torch datasets over :class:`~csetgraph.data.records.Record` lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from csetgraph.data.records import Record, load_image


class ImageDataset(Dataset):
    """Single images (for feature extraction): returns ``(image, pid, camid, index)``."""

    def __init__(self, records: Sequence[Record], transform: Callable | None = None) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        img = load_image(rec.path)
        if self.transform is not None:
            img = self.transform(img)
        return img, rec.pid, rec.camid, index


class PairedDataset(Dataset):
    """Aligned visible/infrared pairs for training.

    Indexed by ``(vis_index, ir_index)`` tuples, as yielded by
    :class:`~csetgraph.data.samplers.CrossModalityIdentitySampler`; returns
    ``(vis_image, ir_image, vis_pid, ir_pid)``. The two records of a pair share their pid
    whenever the sampler built the pair.
    """

    def __init__(
        self,
        vis_records: Sequence[Record],
        ir_records: Sequence[Record],
        transform: Callable | None = None,
    ) -> None:
        self.vis_records = list(vis_records)
        self.ir_records = list(ir_records)
        self.transform = transform

    def __len__(self) -> int:
        return max(len(self.vis_records), len(self.ir_records))

    def _load(self, rec: Record) -> torch.Tensor:
        img = load_image(rec.path)
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, index: tuple[int, int]):
        vi, ii = index
        vis, ir = self.vis_records[vi], self.ir_records[ii]
        return self._load(vis), self._load(ir), vis.pid, ir.pid
