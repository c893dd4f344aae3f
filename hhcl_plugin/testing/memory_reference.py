"""Plain per-sample / per-cluster loop version of the memory step: an oracle, not for training.

Written the way the official code reads (group the batch by cluster in a dict, loop,
one row at a time) and independently of :mod:`hhcl_plugin.memory.cluster_memory`, so the tests can check
the vectorised memories against it and the benchmark can time the two side by side.
It is slow on purpose; nothing in the training path imports it.

Banks are passed as a dict of plain tensors:
``"centroid"`` (C, D), ``"hard"`` (C, D), ``"instances"`` (K, C, D), depending on the mode.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from ..memory.cluster_memory import ClusterMemory

Banks = Dict[str, torch.Tensor]

BANKS_OF_MODE = {
    "CM": ("centroid",),
    "CMhard": ("hard",),
    "CMhybrid": ("hard", "centroid"),
    "CMhybrid_v2": ("centroid", "instances"),
}


def banks_of(memory: ClusterMemory) -> Banks:
    """Copies of a memory's banks in the reference layout."""
    names = {"centroid": "centroid_bank", "hard": "hard_bank", "instances": "instance_bank"}
    return {key: getattr(memory, names[key]).detach().clone() for key in BANKS_OF_MODE[type(memory).__name__]}


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Mean over the batch of -sum_c q_c log p_c with q = (1 - eps) * onehot + eps / C."""
    num_classes = logits.shape[1]
    q = torch.full_like(logits, eps / num_classes)
    for i, c in enumerate(targets.tolist()):
        q[i, c] += 1.0 - eps
    return -(q * torch.log_softmax(logits, dim=1)).sum(1).mean()


def reference_loss(mode: str, banks: Banks, features: torch.Tensor, targets: torch.Tensor, *, temp: float,
                   hard_weight: float = 0.5, label_smooth: float = 0.0) -> torch.Tensor:
    """The total memory loss against the given (pre-update) banks, differentiable in ``features``."""
    ce = lambda logits: smoothed_cross_entropy(logits, targets, label_smooth)  # noqa: E731
    hw = hard_weight
    if mode == "CM":
        return ce(features @ banks["centroid"].t() / temp)
    if mode == "CMhard":
        return ce(features @ banks["hard"].t() / temp)
    if mode == "CMhybrid":
        out_hard = features @ banks["hard"].t() / temp
        out_mean = features @ banks["centroid"].t() / temp
        return hw * (ce(out_hard) + (1 - hw) * ce(out_mean))  # the official bracket
    if mode == "CMhybrid_v2":
        out_centroid = features @ banks["centroid"].t()
        per_slot = torch.stack([features @ slot.t() for slot in banks["instances"]], dim=0)  # (K, B, C)
        hardest_neg = per_slot.max(dim=0).values
        hardest_pos = per_slot.min(dim=0).values
        logits = hardest_neg.clone()
        for i, c in enumerate(targets.tolist()):
            logits[i, c] = hardest_pos[i, c]
        return hw * ce(out_centroid / temp) + (1 - hw) * ce(logits / temp)
    raise KeyError(mode)


@torch.no_grad()
def reference_update_(banks: Banks, features: torch.Tensor, targets: torch.Tensor, *, momentum: float,
                      centroid_update: str = "mean") -> None:
    """One update of the banks, in place, looping over the samples of each cluster.

    ``centroid_update``: ``"mean"`` moves each centroid once towards its batch mean,
    ``"per_sample"`` once per sample in batch order (``CM``'s default, ``MEMORY.CM_UPDATE``).
    """
    groups: Dict[int, List[int]] = {}
    for i, c in enumerate(targets.tolist()):
        groups.setdefault(c, []).append(i)
    dtype = next(iter(banks.values())).dtype
    x = features.detach().to(dtype)

    def step(row: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        new = momentum * row + (1 - momentum) * value
        return new / new.norm()

    for c, members in groups.items():
        if "hard" in banks:
            row = banks["hard"][c]
            sims = [float(x[i] @ row) for i in members]
            hardest = members[sims.index(min(sims))]  # first of equal minima
            banks["hard"][c] = step(row, x[hardest])
        if "centroid" in banks and centroid_update == "mean":
            total = torch.zeros_like(x[0])
            for i in members:
                total += x[i]
            banks["centroid"][c] = step(banks["centroid"][c], total / len(members))
        if "instances" in banks:
            for k, i in enumerate(members[: banks["instances"].shape[0]]):
                banks["instances"][k, c] = x[i]
    if "centroid" in banks and centroid_update == "per_sample":
        for i, c in enumerate(targets.tolist()):
            banks["centroid"][c] = step(banks["centroid"][c], x[i])
