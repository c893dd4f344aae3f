"""Cluster memories of HHCL: contrast each feature against per-cluster prototypes.

The banks are rebuilt from the pseudo labels every epoch and then follow the network
by momentum.  Within a training step the logits and their gradient use the banks as
they were *before* the step, and the banks are updated once, after the gradient is
known: that is the order of the official implementation (bupt-ai-cz/HHCL-ReID), which
updates inside the backward pass, and the order the tests check.

Every update here is vectorised over the batch (:mod:`.batch_update`: no Python loop over
samples or clusters; ``CM``'s official per-sample update loops over the K ranks of a P x K
batch, each step moving all its clusters) and writes only the rows of the clusters in the batch;
on a GPU it also keeps fixed shapes (no host synchronisation, but for ``CM``'s one read of K),
so a step costs a few kernel launches instead of one small launch, and often one sync, per sample.

Layout: one buffer ``bank`` of shape ``(R * C, D)`` holds all of a memory's banks
stacked (``R`` banks of ``C`` rows each; the official layout), so one matrix product
gives every logit and one autograd node owns the update.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from .batch_update import (batch_cluster_means, batch_groups, batch_hardest_features, batch_instance_slots,
                           momentum_update_, sequential_momentum_update_)
from .build import MEMORY_REGISTRY

logger = logging.getLogger(__name__)

LabelsLike = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------- autograd node

class _BankProduct(torch.autograd.Function):
    """``features @ bank.T`` whose backward computes the gradient, then updates the banks.

    Chosen over "logits against ``bank.clone()``, update in forward" because the clone
    would copy every bank each step ((K+1)·C·D floats for CMhybrid_v2), and because an
    update in backward is what the official code does: a forward that is never
    backpropagated leaves the banks untouched in both.  The bank is saved with
    ``save_for_backward``, so anything else that changes it between forward and
    backward (a second forward's update, an explicit :meth:`ClusterMemory.update`)
    makes autograd raise instead of silently using half-updated banks.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, targets: torch.Tensor, bank: torch.Tensor,
                memory: "ClusterMemory") -> torch.Tensor:
        ctx.memory = memory
        ctx.save_for_backward(features, targets, bank)
        with torch.autocast(device_type=features.device.type, enabled=False):
            logits = features.to(bank.dtype).mm(bank.t())
        # the hard bank is rows 0..C-1: column targets[i] is sample i's similarity to its own hard row
        ctx.hard_sims = logits.gather(1, targets.unsqueeze(1)).squeeze(1) if memory.has_hard_bank else None
        return logits

    @staticmethod
    def backward(ctx: Any, grad_logits: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, None, None]:
        features, targets, bank = ctx.saved_tensors
        grad = None
        with torch.autocast(device_type=features.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad = grad_logits.to(bank.dtype).mm(bank).to(features.dtype)
            if ctx.memory.update_in_backward:
                ctx.memory.update(features, targets, hard_sims=ctx.hard_sims)
        return grad, None, None, None


# ---------------------------------------------------------------------------- memories

class ClusterMemory(nn.Module):
    """Base of the memories: owns the stacked banks, the logits and the update step.

    ``forward(features, targets)`` returns the loss terms, already weighted so that the
    training loss is ``sum(terms.values())``; the banks are updated when that loss is
    backpropagated (once per step, after the gradient used the old banks).  Set
    ``update_in_backward = False`` to call :meth:`update` yourself instead, e.g. with
    features gathered from all processes; call it after ``backward``.  ``fixed_shapes``
    picks the update's batch grouping (:func:`.batch_update.batch_groups`; default: fixed
    shapes on CUDA only); ``True`` runs the GPU's layout on any device, for tests and op counts.

    ``features`` are expected L2-normalised (B, D), ``targets`` in ``0..C-1``; targets are
    not range-checked here, since that would need a host sync every step.
    """

    banks_per_cluster = 1
    has_hard_bank = False  # True where rows 0..C-1 are a bank updated with the hardest samples
    centroid_update = "mean"  # how a centroid bank follows the batch (CM: MEMORY.CM_UPDATE)

    def __init__(self, num_clusters: int, num_features: int, *, temp: float = 0.05, momentum: float = 0.1,
                 label_smooth: float = 0.0, dtype: torch.dtype = torch.float32,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__()
        if num_clusters < 1 or num_features < 1:
            raise ValueError(f"a memory needs at least one cluster and one feature, got {num_clusters} x {num_features}")
        if temp <= 0:
            raise ValueError(f"MEMORY.TEMP must be > 0, got {temp}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MEMORY.MOMENTUM must be in [0, 1], got {momentum}")
        if not 0.0 <= label_smooth < 1.0:
            raise ValueError(f"MEMORY.LABEL_SMOOTH must be in [0, 1), got {label_smooth}")
        self.num_clusters = int(num_clusters)
        self.num_features = int(num_features)
        self.temp = float(temp)
        self.momentum = float(momentum)
        self.label_smooth = float(label_smooth)
        self.update_in_backward = True
        self.fixed_shapes: Optional[bool] = None
        rows = self.banks_per_cluster * self.num_clusters
        self.register_buffer("bank", torch.zeros(rows, self.num_features, dtype=dtype, device=device))

    # ---------------------------------------------------------------- construction
    @classmethod
    def kwargs_from_cfg(cls, cfg: CfgNode) -> Dict[str, Any]:
        """Constructor arguments read from the config; subclasses add their own keys."""
        return {"temp": cfg.MEMORY.TEMP, "momentum": cfg.MEMORY.MOMENTUM, "label_smooth": cfg.MEMORY.LABEL_SMOOTH}

    @classmethod
    def from_features(cls, cfg: CfgNode, features: torch.Tensor, labels: LabelsLike,
                      generator: Optional[torch.Generator] = None) -> "ClusterMemory":
        """A memory for ``C = labels.max() + 1`` clusters, on the features' device.

        Banks are float32 for half-precision features (momentum updates accumulate
        small steps that fp16 would round away) and float64 for float64 features.
        ``generator`` seeds the random choices of :class:`CMhybrid_v2`.
        """
        labels_t = _as_labels(labels, features)
        num_clusters = int(labels_t.max()) + 1 if labels_t.numel() else 0
        if num_clusters < 1:
            raise ValueError("cannot build a cluster memory: every sample is an outlier (all labels are -1)")
        dtype = torch.promote_types(features.dtype, torch.float32)
        memory = cls(num_clusters, features.shape[1], dtype=dtype, device=features.device, **cls.kwargs_from_cfg(cfg))
        memory.initialize(features, labels_t, generator=generator)
        logger.info("%s memory: %d clusters x %d banks of dim %d", cls.__name__, num_clusters,
                    memory.banks_per_cluster, features.shape[1])
        return memory

    @torch.no_grad()
    def initialize(self, features: torch.Tensor, labels: LabelsLike, generator: Optional[torch.Generator] = None) -> None:
        """Fill the banks from the features the labels were computed on (label -1: outlier, ignored)."""
        labels_t = _as_labels(labels, features)
        feats = features.detach().to(self.bank.dtype)
        valid = labels_t >= 0
        if int(labels_t.max()) + 1 != self.num_clusters:
            raise ValueError(f"labels name {int(labels_t.max()) + 1} clusters, the memory has {self.num_clusters}")
        counts = torch.bincount(labels_t[valid], minlength=self.num_clusters)
        empty = int((counts == 0).sum())
        if empty:
            raise ValueError(f"{empty} of the cluster ids 0..{self.num_clusters - 1} have no member; "
                             "pseudo labels must be contiguous")
        sums = feats.new_zeros(self.num_clusters, feats.shape[1]).index_add_(0, labels_t[valid], feats[valid])
        centers = F.normalize(sums / counts.unsqueeze(1).to(sums.dtype), dim=1)
        self._initialize_banks(centers, feats, labels_t, counts, generator)

    def _initialize_banks(self, centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                          counts: torch.Tensor, generator: Optional[torch.Generator]) -> None:
        """Default: every bank starts at the normalised cluster means."""
        self.bank.copy_(centers.repeat(self.banks_per_cluster, 1))

    # ---------------------------------------------------------------- step
    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        logits = _BankProduct.apply(features, targets, self.bank, self) / self.temp
        return self.losses(logits, targets)

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Loss terms from the temperature-scaled logits against all stacked banks ``(B, R*C)``."""
        raise NotImplementedError

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor, hard_sims: Optional[torch.Tensor] = None) -> None:
        """One momentum step of the banks with a batch (features cast to the bank dtype).

        ``hard_sims`` (B,): each sample's similarity to its cluster's hard-bank row before
        the update, if already known (the forward's logits hold it); computed otherwise.
        An empty batch changes nothing.
        """
        if targets.numel() == 0:
            return
        if hard_sims is not None:
            hard_sims = _plain(hard_sims, self.bank.dtype)
        self._update(_plain(features, self.bank.dtype), targets, hard_sims)

    def _update(self, features: torch.Tensor, targets: torch.Tensor, hard_sims: Optional[torch.Tensor]) -> None:
        raise NotImplementedError

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """CE with targets ``(1 - eps) * onehot + eps / C`` when ``MEMORY.LABEL_SMOOTH = eps > 0``.

        The official code uses a fixed eps of 0.1 whenever smoothing is on; here the
        configured value is used.
        """
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smooth)

    def extra_repr(self) -> str:
        return (f"clusters={self.num_clusters}, dim={self.num_features}, temp={self.temp}, "
                f"momentum={self.momentum}, label_smooth={self.label_smooth}")


def _plain(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Detached and in the bank dtype, without the two calls when they would do nothing (small CPU ops cost)."""
    if values.requires_grad:
        values = values.detach()
    return values if values.dtype == dtype else values.to(dtype)


def _as_labels(labels: LabelsLike, features: torch.Tensor) -> torch.Tensor:
    labels_t = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    labels_t = labels_t.to(device=features.device, dtype=torch.long).reshape(-1)
    if labels_t.shape[0] != features.shape[0]:
        raise ValueError(f"got {labels_t.shape[0]} labels for {features.shape[0]} features")
    return labels_t


@MEMORY_REGISTRY.register()
class CM(ClusterMemory):
    """One centroid bank; loss: CE over the centroids.

    ``MEMORY.CM_UPDATE`` picks the bank update:

    * ``per_sample`` (default, the official ``CM`` of HHCL and Cluster-Contrast): one
      momentum step per sample, in batch order, renormalised after each, so a cluster
      with n samples in the batch moves n times;
    * ``mean``: one step per cluster towards the mean of its batch features, as the
      centroid banks of ``CMhybrid`` and ``CMhybrid_v2`` are updated.
    """

    updates = ("per_sample", "mean")

    def __init__(self, num_clusters: int, num_features: int, *, update: str = "per_sample", **kwargs: Any) -> None:
        super().__init__(num_clusters, num_features, **kwargs)
        if update not in self.updates:
            raise ValueError(f"MEMORY.CM_UPDATE must be one of {', '.join(self.updates)}, got {update!r}")
        self.centroid_update = update

    @classmethod
    def kwargs_from_cfg(cls, cfg: CfgNode) -> Dict[str, Any]:
        return {**super().kwargs_from_cfg(cfg), "update": cfg.MEMORY.CM_UPDATE}

    @property
    def centroid_bank(self) -> torch.Tensor:
        return self.bank

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"loss_centroid": self.cross_entropy(logits, targets)}

    def _update(self, features: torch.Tensor, targets: torch.Tensor, hard_sims: Optional[torch.Tensor]) -> None:
        groups = batch_groups(targets, self.fixed_shapes)
        if self.centroid_update == "per_sample":
            sequential_momentum_update_(self.bank, targets, features, groups, self.momentum)
        else:
            momentum_update_(self.bank, groups.clusters, batch_cluster_means(features, groups), self.momentum)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, update={self.centroid_update}"


@MEMORY_REGISTRY.register()
class CMhard(ClusterMemory):
    """One bank, updated with each cluster's hardest (least similar) batch feature.

    The hardest sample is chosen against the bank before the update; ties go to the
    first sample in batch order.  Loss: CE over the bank.
    """

    has_hard_bank = True

    @property
    def hard_bank(self) -> torch.Tensor:
        return self.bank

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"loss_hard": self.cross_entropy(logits, targets)}

    def _update(self, features: torch.Tensor, targets: torch.Tensor, hard_sims: Optional[torch.Tensor]) -> None:
        groups = batch_groups(targets, self.fixed_shapes)
        hardest = batch_hardest_features(features, groups, self.bank, hard_sims)
        momentum_update_(self.bank, groups.clusters, hardest, self.momentum)


class _Hybrid(ClusterMemory):
    """Adds ``MEMORY.HARD_WEIGHT`` to the base memory."""

    def __init__(self, num_clusters: int, num_features: int, *, hard_weight: float = 0.5, **kwargs: Any) -> None:
        super().__init__(num_clusters, num_features, **kwargs)
        if not 0.0 <= hard_weight <= 1.0:
            raise ValueError(f"MEMORY.HARD_WEIGHT must be in [0, 1], got {hard_weight}")
        self.hard_weight = float(hard_weight)

    @classmethod
    def kwargs_from_cfg(cls, cfg: CfgNode) -> Dict[str, Any]:
        return {**super().kwargs_from_cfg(cfg), "hard_weight": cfg.MEMORY.HARD_WEIGHT}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hard_weight={self.hard_weight}"


@MEMORY_REGISTRY.register()
class CMhybrid(_Hybrid):
    """HHCL: a hard bank (updated like :class:`CMhard`) and a centroid bank (like :class:`CM`).

    Both start at the normalised cluster means; rows ``0..C-1`` of ``bank`` are the
    hard bank, rows ``C..2C-1`` the centroid bank.  The loss is the official weighting

        loss = hw * (CE_hard + (1 - hw) * CE_centroid)

    (mind the bracket: with hw = 0.5 that is 0.5 CE_hard + 0.25 CE_centroid), *not*
    ``hw * CE_hard + (1 - hw) * CE_centroid``.  Returned as
    ``loss_hard = hw * CE_hard`` and ``loss_centroid = hw * (1 - hw) * CE_centroid``.
    """

    banks_per_cluster = 2
    has_hard_bank = True

    @property
    def hard_bank(self) -> torch.Tensor:
        return self.bank[: self.num_clusters]

    @property
    def centroid_bank(self) -> torch.Tensor:
        return self.bank[self.num_clusters:]

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        hard, centroid = logits.split(self.num_clusters, dim=1)
        hw = self.hard_weight
        return {"loss_hard": hw * self.cross_entropy(hard, targets),
                "loss_centroid": hw * (1.0 - hw) * self.cross_entropy(centroid, targets)}

    def _update(self, features: torch.Tensor, targets: torch.Tensor, hard_sims: Optional[torch.Tensor]) -> None:
        groups = batch_groups(targets, self.fixed_shapes)
        hardest = batch_hardest_features(features, groups, self.hard_bank, hard_sims)
        means = batch_cluster_means(features, groups)
        # both banks in one step: hard rows are c, centroid rows C + c of the stacked bank
        rows = torch.cat([groups.clusters, groups.clusters + self.num_clusters])
        momentum_update_(self.bank, rows, torch.cat([hardest, means]), self.momentum)


@MEMORY_REGISTRY.register()
class CMhybrid_v2(_Hybrid):  # noqa: N801  (the name is the MEMORY.MODE value)
    """A centroid bank plus K instance slots per cluster (K = ``DATALOADER.NUM_INSTANCES``).

    Rows ``0..C-1`` of ``bank`` are the centroids; slot k of cluster c is row
    ``(1 + k) * C + c`` (see :attr:`instance_bank`, shape ``(K, C, D)``).  Slots start as K
    member features per cluster drawn with replacement, normalised.

    Update: centroids by mean-momentum as in :class:`CM`; the slots of a cluster in the
    batch are overwritten (no momentum) by its batch features in batch order, slot k by
    its (k+1)-th sample; samples past the K-th are ignored and slots past the cluster's
    count keep their value.  Features are stored as given (expected unit norm), as the
    official code does.

    Loss: each sample's instance logit is the hardest slot: the least similar slot of
    its own cluster and the most similar slot of every other cluster;
    ``loss = hw * CE(centroid) + (1 - hw) * CE(instance)``, returned as
    ``loss_centroid`` and ``loss_instance``.
    """

    def __init__(self, num_clusters: int, num_features: int, *, num_instances: int = 16, **kwargs: Any) -> None:
        if num_instances < 1:
            raise ValueError(f"DATALOADER.NUM_INSTANCES must be >= 1 for CMhybrid_v2, got {num_instances}")
        self.num_instances = int(num_instances)
        self.banks_per_cluster = 1 + self.num_instances
        super().__init__(num_clusters, num_features, **kwargs)

    @classmethod
    def kwargs_from_cfg(cls, cfg: CfgNode) -> Dict[str, Any]:
        return {**super().kwargs_from_cfg(cfg), "num_instances": cfg.DATALOADER.NUM_INSTANCES}

    @property
    def centroid_bank(self) -> torch.Tensor:
        return self.bank[: self.num_clusters]

    @property
    def instance_bank(self) -> torch.Tensor:
        return self.bank[self.num_clusters:].view(self.num_instances, self.num_clusters, self.num_features)

    def _initialize_banks(self, centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                          counts: torch.Tensor, generator: Optional[torch.Generator]) -> None:
        # Members grouped by cluster: cluster c owns order[offsets[c] : offsets[c] + counts[c]].
        order = torch.argsort(labels, stable=True)[int((labels < 0).sum()):]
        offsets = torch.cumsum(counts, 0) - counts
        draw_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(self.num_instances, self.num_clusters, dtype=torch.float64, generator=generator,
                       device=draw_device).to(labels.device)
        # floor(u * n) is uniform over 0..n-1; the clamp guards the rounding of u * n up to n.
        pick = torch.minimum((u * counts).floor().long(), counts - 1) + offsets
        self.centroid_bank.copy_(centers)
        self.instance_bank.copy_(F.normalize(features[order[pick]], dim=-1))

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        c = self.num_clusters
        centroid = logits[:, :c]
        slots = logits[:, c:].reshape(-1, self.num_instances, c)
        # the most similar slot of every cluster, then in the own cluster's column the least similar:
        # its K slots are gathered first, as a min over every cluster's slots would be mostly wasted
        own = slots.gather(2, targets.view(-1, 1, 1).expand(-1, self.num_instances, 1)).squeeze(2)
        instance = slots.max(dim=1).values.scatter(1, targets.unsqueeze(1), own.min(dim=1, keepdim=True).values)
        hw = self.hard_weight
        return {"loss_centroid": hw * self.cross_entropy(centroid, targets),
                "loss_instance": (1.0 - hw) * self.cross_entropy(instance, targets)}

    def _update(self, features: torch.Tensor, targets: torch.Tensor, hard_sims: Optional[torch.Tensor]) -> None:
        groups = batch_groups(targets, self.fixed_shapes)
        # the centroids are rows 0..C-1 of the stacked bank; slot k of cluster c is row (1 + k) * C + c
        momentum_update_(self.bank, groups.clusters, batch_cluster_means(features, groups), self.momentum)
        slot, source = batch_instance_slots(targets, self.num_instances, groups)
        rows = torch.add(targets, slot, alpha=self.num_clusters).add_(self.num_clusters)
        self.bank.index_copy_(0, rows, features if source is None else features.index_select(0, source))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_instances={self.num_instances}"
