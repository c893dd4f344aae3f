"""A project on top of the plugin: a memory mode, a config key and a hook, with no plugin file edited.

- ``CMhardTopK`` (``MEMORY.MODE CMhardTopK``): CMhard's hard bank, with the loss over each sample's
  own cluster and only its ``HARD_MINING.NUM_NEGATIVES`` most similar other clusters;
- ``add_hard_mining_config(cfg)``: the ``HARD_MINING`` keys;
- ``ClusterSizeHook``: writes each epoch's cluster sizes to ``OUTPUT_DIR/cluster_sizes.json``,
  added by ``HardMiningEngine.build_hooks`` (``ENGINE HardMiningEngine``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np
import torch
from yacs.config import CfgNode

from hhcl_plugin.config import HHCLConfig
from hhcl_plugin.config.checks import Number
from hhcl_plugin.engine import ENGINE_REGISTRY, HookBase, ImageHHCLEngine
from hhcl_plugin.engine.run_dir import write_json
from hhcl_plugin.memory import MEMORY_REGISTRY
from hhcl_plugin.memory.cluster_memory import CMhard
from hhcl_plugin.utils import comm


def add_hard_mining_config(cfg: HHCLConfig) -> None:
    """The project's keys, their defaults and their value rules, added to the plugin's (detectron2's add_*_config)."""
    cfg.HARD_MINING = CfgNode()
    cfg.HARD_MINING.NUM_NEGATIVES = 8  # other clusters in each sample's softmax: the most similar ones
    cfg.add_rules({"HARD_MINING.NUM_NEGATIVES": Number(lo=1, integer=True)})


@MEMORY_REGISTRY.register()
class CMhardTopK(CMhard):
    """CMhard with the softmax restricted to the own cluster and the hardest negative clusters."""

    def __init__(self, num_clusters: int, num_features: int, *, num_negatives: int = 8, **kwargs: Any) -> None:
        super().__init__(num_clusters, num_features, **kwargs)
        if num_negatives < 1:
            raise ValueError(f"HARD_MINING.NUM_NEGATIVES must be >= 1, got {num_negatives}")
        self.num_negatives = int(num_negatives)

    @classmethod
    def kwargs_from_cfg(cls, cfg: CfgNode) -> Dict[str, Any]:
        return {**super().kwargs_from_cfg(cfg), "num_negatives": cfg.HARD_MINING.NUM_NEGATIVES}

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        positive = logits.gather(1, targets[:, None])
        negatives = logits.scatter(1, targets[:, None], float("-inf"))
        k = min(self.num_negatives, logits.shape[1] - 1)
        hardest = negatives.topk(k, dim=1).values if k > 0 else negatives[:, :0]
        kept = torch.cat([positive, hardest], dim=1)  # the own cluster is column 0
        return {"loss_hard_topk": self.cross_entropy(kept, torch.zeros_like(targets))}


class ClusterSizeHook(HookBase):
    """Each epoch's cluster sizes (largest first) in ``cluster_sizes.json`` (rank 0).

    The sizes of the epochs so far are the hook's state: checkpoints keep them and ``--resume``
    hands them back, so a resumed run's file still lists every epoch.
    """

    reads = ("pseudo_labels",)

    def __init__(self) -> None:
        self.sizes: List[Dict[str, Any]] = []

    def before_epoch(self) -> None:
        eng = self.engine
        labels = eng.pseudo_labels[eng.pseudo_labels >= 0]
        self.sizes.append({"epoch": eng.epoch + 1, "sizes": sorted(np.bincount(labels).tolist(), reverse=True)})
        if comm.is_main_process():
            write_json(os.path.join(eng.cfg.OUTPUT_DIR, "cluster_sizes.json"), self.sizes)

    def state_dict(self) -> Dict[str, Any]:
        return {"sizes": self.sizes}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sizes = list(state["sizes"])


@ENGINE_REGISTRY.register()
class HardMiningEngine(ImageHHCLEngine):
    def build_hooks(self) -> List[HookBase]:
        return super().build_hooks() + [ClusterSizeHook()]
