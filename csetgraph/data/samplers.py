"""The cross-modality identity sampler (P identities x K aligned visible/infrared pairs)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from csetgraph.errors import ConfigError


class CrossModalityIdentitySampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of aligned pairs: P identities x K (visible, infrared) index pairs.

    Visible image b and infrared image b of a batch share their identity. Each epoch reshuffles
    from ``seed + epoch`` (call :meth:`set_epoch`), so a run is reproducible and a resumed run
    continues the same sequence.

    For distributed training every process builds the same *global* batches of
    ``P * num_replicas`` identities and keeps the ``rank``-th slice of P identities, so the
    processes of one step see disjoint identities and together equal one single-process batch
    of ``P * num_replicas`` identities.

    Args:
        vis_pids: pid of each visible record (relabelled or not).
        ir_pids: pid of each infrared record.
        num_ids_per_batch: P, identities per batch and process.
        num_instances: K, images per identity and modality.
        batches_per_epoch: batches per epoch and process; ``None``: enough batches for the
            visible training images to be seen about once (the community's epoch length).
        seed: base seed.
        num_replicas, rank: the distributed share.
    """

    def __init__(
        self,
        vis_pids: Sequence[int],
        ir_pids: Sequence[int],
        num_ids_per_batch: int = 8,
        num_instances: int = 4,
        *,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_ids_per_batch < 1 or num_instances < 1:
            raise ValueError("num_ids_per_batch and num_instances must be >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.vis_index = defaultdict(list)
        self.ir_index = defaultdict(list)
        for i, pid in enumerate(vis_pids):
            self.vis_index[int(pid)].append(i)
        for i, pid in enumerate(ir_pids):
            self.ir_index[int(pid)].append(i)
        self.pids = sorted(set(self.vis_index) & set(self.ir_index))
        if len(self.pids) < num_ids_per_batch * num_replicas:
            raise ConfigError(
                f"{len(self.pids)} training identities have images of both modalities, fewer "
                f"than num_ids_per_batch x processes = {num_ids_per_batch} x {num_replicas}: "
                "lower data.num_ids_per_batch (or use fewer processes)"
            )
        self.P, self.K = num_ids_per_batch, num_instances
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        if batches_per_epoch is None:
            batches_per_epoch = math.ceil(len(vis_pids) / (self.P * self.K * num_replicas))
        self.batches_per_epoch = max(1, batches_per_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle :meth:`__iter__` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _draw(self, rng: np.random.Generator, pool: list[int]) -> list[int]:
        replace = len(pool) < self.K
        return [pool[i] for i in rng.choice(len(pool), size=self.K, replace=replace)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        ids_per_step = self.P * self.num_replicas
        order: list[int] = []
        for _ in range(self.batches_per_epoch):
            if len(order) < ids_per_step:  # a fresh pass; a batch never repeats an identity
                order = [self.pids[i] for i in rng.permutation(len(self.pids))]
            step_ids, order = order[:ids_per_step], order[ids_per_step:]
            # Draw every process's share from the one global stream, then keep ours.
            batches = []
            for pid in step_ids:
                vis = self._draw(rng, self.vis_index[pid])
                ir = self._draw(rng, self.ir_index[pid])
                batches.append(list(zip(vis, ir, strict=True)))
            mine = batches[self.rank * self.P : (self.rank + 1) * self.P]
            yield [pair for group in mine for pair in group]
