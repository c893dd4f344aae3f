"""How one batch updates bank rows, vectorised over the batch (no loop over samples or clusters).

Public so that other update schemes (e.g. with all-gathered features under DDP) reuse them.
A batch touches few clusters (P of a P x K batch), so the update works on *groups* of
samples, one bank row written per group, never on all C rows:

* on CPU, one group per cluster present (``torch.unique``: the update reads and writes
  P rows, as a per-cluster loop would, but without the Python loop);
* on a GPU, where ``torch.unique`` would synchronise with the host, one group per
  *sample* (fixed shapes, B rows), built on the (B x B) "same cluster" matrix: each
  sample computes its cluster's value from the cluster's first sample, so duplicate
  writes carry identical values and the scatter does not depend on write order.  Sums
  over a cluster are a product with that matrix rather than an ``index_add_``, whose
  CUDA atomics add in an order that varies from run to run.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch


class BatchGroups(NamedTuple):
    """How the samples of a batch map to the bank rows they update."""

    clusters: torch.Tensor  # (G,) bank row (cluster id) written by each group
    # (B,) group of each sample, in 0..G-1; with per-sample groups, the cluster's first
    # sample, whose value each sample of the cluster takes
    member_of: torch.Tensor
    counts: torch.Tensor  # (G,) number of batch samples in each group's cluster
    same: Optional[torch.Tensor] = None  # (B, B) bool, samples i and j share a cluster (per-sample groups)


def batch_groups(targets: torch.Tensor, fixed_shapes: Optional[bool] = None) -> BatchGroups:
    """One group per cluster of the batch on CPU, one per sample (no host sync) on a GPU.

    ``fixed_shapes`` forces one or the other (default: fixed shapes on CUDA only).
    """
    if targets.is_cuda if fixed_shapes is None else fixed_shapes:
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        first = same.to(torch.uint8).argmax(1)  # argmax returns the first maximum
        return BatchGroups(targets, first, same.sum(1), same)
    clusters, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
    return BatchGroups(clusters, inverse, counts)


def momentum_update_(bank: torch.Tensor, rows: torch.Tensor, new: torch.Tensor, momentum: float) -> None:
    """``bank[r] <- normalize(m * bank[r] + (1 - m) * new[t])`` for each ``r = rows[t]``.

    Rows not listed are not touched; rows listed twice must come with equal ``new`` rows.
    ``new`` is scratch and is overwritten: one (G, D) buffer fewer per step, which on a
    CPU can cost more in page faults than the arithmetic does.
    """
    updated = new.lerp_(bank.index_select(0, rows), momentum)  # m * bank + (1 - m) * new
    bank.index_copy_(0, rows, updated.div_(updated.norm(dim=1, keepdim=True).clamp_(min=1e-12)))


def batch_cluster_means(features: torch.Tensor, groups: BatchGroups) -> torch.Tensor:
    """The mean batch feature of each group's cluster ``(G, D)``."""
    if groups.same is None:
        sums = features.new_zeros(groups.clusters.shape[0], features.shape[1]).index_add_(0, groups.member_of, features)
    else:  # row i sums sample i's cluster; each group then takes its cluster's first row
        sums = groups.same.to(features.dtype).mm(features).index_select(0, groups.member_of)
    return sums.div_(groups.counts.unsqueeze(1))


def batch_hardest_features(features: torch.Tensor, groups: BatchGroups, bank: torch.Tensor,
                           sims: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each group's least similar batch feature to its cluster's bank row ``(G, D)``.

    Similarities are taken against the bank before the update; ties go to the earliest
    sample, as ``np.argmin`` does in the official loop.  ``sims`` (B,), each sample's
    similarity to its own cluster's row, may be passed in when the caller has it: the
    training forward computes exactly these among its logits, and reusing them saves
    the one read of the batch that the update would otherwise need.
    """
    rows = None if sims is not None else bank.index_select(0, groups.clusters)
    if groups.same is not None:  # one group per sample, whose row is its own cluster's
        if sims is None:
            sims = (features * rows).sum(1)
        # row i: the similarities of sample i's cluster, +inf elsewhere; equal rows give equal argmins
        return features.index_select(0, torch.where(groups.same, sims.unsqueeze(0), float("inf")).argmin(1))
    if sims is None:  # few groups: one (B x G) product reads the batch once
        sims = (features @ rows.T).gather(1, groups.member_of.unsqueeze(1)).squeeze(1)
    # (G, B): sample i's similarity in its group's row, +inf elsewhere; argmin takes the first minimum
    masked = sims.new_full((groups.clusters.shape[0], sims.shape[0]), float("inf"))
    masked.scatter_(0, groups.member_of.unsqueeze(0), sims.unsqueeze(0))
    return features.index_select(0, masked.argmin(1))


def batch_ranks(targets: torch.Tensor, groups: BatchGroups) -> torch.Tensor:
    """How many samples of the same cluster come earlier in the batch, for each sample ``(B,)``."""
    if groups.same is None and targets.device.type == "cpu":
        return torch.from_numpy(_cpu_ranks(groups.member_of.numpy(), groups.counts.numpy())[0])
    same = groups.same if groups.same is not None else targets.unsqueeze(0) == targets.unsqueeze(1)
    return same.tril(-1).sum(1)


def sequential_momentum_update_(bank: torch.Tensor, targets: torch.Tensor, features: torch.Tensor,
                                groups: BatchGroups, momentum: float) -> None:
    """One momentum step per sample, in batch order: the official ``CM`` update.

    A cluster with n samples in the batch moves n times, renormalised after each.  Step k
    moves every cluster of the batch with its k-th sample at once, so the update takes as
    many steps as the largest cluster has samples (K of a P x K batch), not B.  Reading that
    number is the update's one host synchronisation on a GPU.
    """
    rank = batch_ranks(targets, groups)
    steps = int(groups.counts.max())
    if groups.same is None:  # the samples of step k are a run of the rank-sorted batch
        order = torch.argsort(rank, stable=True)
        for sel in order.split(torch.bincount(rank, minlength=steps).tolist()):
            momentum_update_(bank, targets[sel], features[sel], momentum)
        return
    # fixed shapes: every sample carries its cluster's row through the steps, unchanged where the
    # cluster has no k-th sample; [k, i, j]: j is the k-th sample of i's cluster
    kth = groups.same.unsqueeze(0) & (rank == torch.arange(steps, device=rank.device).unsqueeze(1)).unsqueeze(1)
    source, present = kth.to(torch.uint8).argmax(2), kth.any(2, keepdim=True)
    rows = bank.index_select(0, targets)
    for k in range(steps):
        moved = features.index_select(0, source[k]).lerp_(rows, momentum)
        rows = torch.where(present[k], moved.div_(moved.norm(dim=1, keepdim=True).clamp_(min=1e-12)), rows)
    bank.index_copy_(0, targets, rows)


def batch_instance_slots(targets: torch.Tensor, num_instances: int,
                         groups: Optional[BatchGroups] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Slot written by each sample ``(B,)`` and the sample whose feature goes there ``(B,)``.

    The i-th sample of a cluster in batch order writes slot i.  Samples past the K-th
    of their cluster are sent to slot K-1 again, carrying the K-th sample's feature:
    duplicate destinations then write identical values, so the result of the scatter
    does not depend on write order (deterministic on GPU) and needs no scratch row.

    Given the per-cluster ``groups`` of a CPU batch, the ranks come from a few numpy
    calls on the B integers, and the source is ``None`` (each sample writes its own
    feature) unless a cluster has more than K samples.  Otherwise (fixed shapes, no host
    sync) they come from the (B x B) "same cluster" matrix in a handful of tensor ops.
    """
    if groups is not None and groups.same is None and targets.device.type == "cpu":
        return _cpu_instance_slots(groups, num_instances)
    same = groups.same if groups is not None else None
    if same is None:
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
    rank = same.tril(-1).sum(1)  # samples of the same cluster earlier in the batch
    slot = rank.clamp(max=num_instances - 1)
    # the sample of the same cluster whose rank is this sample's slot: itself, or the K-th past K
    source = (same & (rank.unsqueeze(0) == slot.unsqueeze(1))).to(torch.uint8).argmax(1)
    return slot, source


def _cpu_ranks(member_of: np.ndarray, counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample's rank in its group, the samples sorted by group (stable) and each group's first position there."""
    order = np.argsort(member_of, kind="stable")  # each group's samples in batch order, groups in turn
    run_start = np.cumsum(counts) - counts
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0]) - np.repeat(run_start, counts)
    return rank, order, run_start


def _cpu_instance_slots(groups: BatchGroups, num_instances: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    member_of, counts = groups.member_of.numpy(), groups.counts.numpy()
    rank, order, run_start = _cpu_ranks(member_of, counts)
    if int(counts.max()) <= num_instances:
        return torch.from_numpy(rank), None
    kth = order[np.minimum(run_start + num_instances - 1, order.shape[0] - 1)]  # valid where counts > K
    source = np.where(rank >= num_instances, kth[member_of], np.arange(order.shape[0]))
    return torch.from_numpy(np.minimum(rank, num_instances - 1)), torch.from_numpy(source)
