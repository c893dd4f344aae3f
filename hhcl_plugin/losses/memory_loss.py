"""The cluster memory's loss (HHCL's own), as the first entry of the loss registry."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from yacs.config import CfgNode

from .build import LOSS_REGISTRY, Clustering, LossTerm


@LOSS_REGISTRY.register(name="memory")
class MemoryLoss(LossTerm):
    """The terms of the epoch's memory (``MEMORY.MODE``), times ``LOSS.MEMORY.WEIGHT``.

    The memory itself stays the engine's (the clustering hook builds it, the step updates
    it); this term only adds its loss.  At weight 1 the terms are passed on untouched, so a
    run with ``LOSS.NAMES ("memory",)`` computes exactly what the memory alone computes.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.__dict__["memory"] = None  # not a submodule: its banks belong to the engine's memory

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> "MemoryLoss":
        if cfg.LOSS.MEMORY.WEIGHT < 0:
            raise ValueError(f"LOSS.MEMORY.WEIGHT must be >= 0, got {cfg.LOSS.MEMORY.WEIGHT}")
        return cls(cfg.LOSS.MEMORY.WEIGHT)

    def on_clustering(self, clustering: Clustering) -> None:
        self.__dict__["memory"] = clustering.memory

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                cameras: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        terms = self.memory(features, targets)
        if self.weight == 1.0:
            return terms
        return {k: self.weight * v for k, v in terms.items()}
