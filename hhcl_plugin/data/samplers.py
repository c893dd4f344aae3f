"""Training samplers: P x K batches over pseudo identities, selected by ``DATALOADER.SAMPLER``."""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, List, Sequence

import numpy as np
from torch.utils.data import Sampler
from yacs.config import CfgNode

from ..utils import comm
from ..utils.registry import Registry

logger = logging.getLogger(__name__)

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = """
Registered classes are ``torch.utils.data.Sampler`` subclasses constructed as
``cls(data_source, batch_size=, num_instances=, num_iters=, seed=, rank=, world_size=)``, where ``data_source``
holds ``(img_path, pseudo_label, camid, ...)`` tuples.
"""


@dataclass
class _Identity:
    """One pseudo identity's samples, grouped by camera for the round-robin draw."""

    indices: np.ndarray  # dataset indices, sorted by camera code
    cams: np.ndarray  # camera code 0..m-1 of each index
    cam_offsets: np.ndarray  # where each camera's run starts in ``indices``

    @property
    def num_cams(self) -> int:
        return len(self.cam_offsets)


@SAMPLER_REGISTRY.register()
class CameraAwarePKSampler(Sampler[int]):
    """``num_iters`` batches of P identities x K instances, the K spread over cameras.

    Cross-camera positives are what the cluster memory must learn to pull together, so
    each identity's K instances are drawn round-robin over its cameras (in random
    order, random images within a camera): an identity seen by m cameras gets
    ``min(K, m)`` distinct cameras in every batch.  Identities are drawn from a
    reshuffled cycle, so within an epoch their counts differ by at most one; an
    identity with fewer than K images is completed by sampling with replacement, and
    only then.  Items with a negative label (outliers) are never sampled.

    The order is a function of ``(seed, epoch)`` only; :meth:`set_epoch` reshuffles.

    Under DDP (``world_size > 1``) every rank draws the same global batches of
    ``world_size * P`` distinct identities and yields its own P of them, so ranks never
    share an identity within a step and the global batch is exactly what one process
    with ``batch_size * world_size`` would draw.
    """

    def __init__(self, data_source: Sequence[Sequence[Any]], batch_size: int, num_instances: int,
                 num_iters: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if num_instances < 1 or batch_size < 1 or num_iters < 1:
            raise ValueError(f"batch_size ({batch_size}), num_instances ({num_instances}) and num_iters "
                             f"({num_iters}) must be positive")
        if batch_size % num_instances:
            raise ValueError(f"batch_size (SOLVER.IMS_PER_BATCH={batch_size}) must be a multiple of num_instances "
                             f"(DATALOADER.NUM_INSTANCES={num_instances})")
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_iters = int(num_iters)
        self.num_pids_per_batch = self.batch_size // self.num_instances
        self.seed = int(seed)
        self.epoch = 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_pids_global = self.num_pids_per_batch * self.world_size

        by_pid: Dict[int, Dict[Any, List[int]]] = {}
        for index, item in enumerate(data_source):
            pid, cam = int(item[1]), item[2]
            if pid >= 0:
                by_pid.setdefault(pid, {}).setdefault(cam, []).append(index)
        if len(by_pid) < self.num_pids_global:
            processes = f" on each of {self.world_size} processes" if self.world_size > 1 else ""
            raise ValueError(
                f"the data has {len(by_pid)} (pseudo) identities, but a batch of {batch_size} images{processes} with "
                f"{num_instances} instances per identity needs P = {self.num_pids_global} distinct identities; "
                "lower SOLVER.IMS_PER_BATCH or DATALOADER.NUM_INSTANCES, or get more clusters")
        self.pids = np.array(sorted(by_pid), dtype=np.int64)
        self._identities = {pid: _group(by_pid[pid]) for pid in self.pids.tolist()}
        small = sum(len(ident.indices) < self.num_instances for ident in self._identities.values())
        logger.info("%s: %d identities, %d images, P=%d x K=%d, %d identities with fewer than K images",
                    type(self).__name__, len(self.pids), sum(len(i.indices) for i in self._identities.values()),
                    self.num_pids_per_batch, self.num_instances, small)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_iters * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        mine = range(self.rank * self.num_pids_per_batch, (self.rank + 1) * self.num_pids_per_batch)
        for pids in self._identity_batches(rng):
            for j, pid in enumerate(pids):
                chosen = self._draw_instances(self._identities[pid], rng)  # every rank draws: rngs stay in step
                if j in mine:
                    yield from chosen.tolist()

    def _identity_batches(self, rng: np.random.Generator) -> Iterator[List[int]]:
        """``world_size * P`` distinct identities per batch, in order from concatenated random permutations.

        Where a batch spans two permutations, an identity already in it is put back at
        the front of the queue for the next batch instead of being used twice.
        """
        queue: Deque[int] = deque()
        for _ in range(self.num_iters):
            batch: List[int] = []
            deferred: List[int] = []
            while len(batch) < self.num_pids_global:
                if not queue:
                    queue.extend(rng.permutation(self.pids).tolist())
                pid = queue.popleft()
                (deferred if pid in batch else batch).append(pid)
            queue.extendleft(reversed(deferred))
            yield batch

    def _draw_instances(self, ident: _Identity, rng: np.random.Generator) -> np.ndarray:
        """K indices of one identity: round-robin over its cameras, with replacement only if too few."""
        n, k, m = len(ident.indices), self.num_instances, ident.num_cams
        # Rank of each image within its camera, in a random order: sort a random key per
        # image within each camera's run (runs are contiguous since indices are camera-sorted).
        rank = np.empty(n, dtype=np.int64)
        order = np.lexsort((rng.random(n), ident.cams))
        rank[order] = np.arange(n) - ident.cam_offsets[ident.cams[order]]
        # Round r takes the r-th image of every camera, cameras in a random order.
        cam_position = rng.permutation(m)
        chosen = ident.indices[np.argsort(rank * m + cam_position[ident.cams], kind="stable")[:k]]
        if n < k:
            chosen = np.concatenate([chosen, rng.choice(ident.indices, k - n, replace=True)])
        return chosen


def _group(by_cam: Dict[Any, List[int]]) -> _Identity:
    cams = list(by_cam)  # first-seen order: fixed for a given data source; cameras are shuffled per draw
    sizes = np.array([len(by_cam[c]) for c in cams], dtype=np.int64)
    return _Identity(
        indices=np.concatenate([np.asarray(by_cam[c], dtype=np.int64) for c in cams]),
        cams=np.repeat(np.arange(len(cams)), sizes),
        cam_offsets=np.cumsum(sizes) - sizes,
    )


def build_train_sampler(cfg: CfgNode, data_source: Sequence[Sequence[Any]], seed: int) -> Sampler:
    """The ``DATALOADER.SAMPLER`` sampler for this epoch's pseudo-labelled items, sharded over the ranks.

    ``SOLVER.IMS_PER_BATCH`` is per process. An unknown sampler name raises the
    registry's ``KeyError``, which lists the valid names.
    """
    return SAMPLER_REGISTRY.get(cfg.DATALOADER.SAMPLER)(
        data_source, batch_size=cfg.SOLVER.IMS_PER_BATCH, num_instances=cfg.DATALOADER.NUM_INSTANCES,
        num_iters=cfg.SOLVER.ITERS, seed=seed, rank=comm.get_rank(), world_size=comm.get_world_size())
