"""Cluster memories (CM, CMhard, CMhybrid, CMhybrid_v2), selected by ``MEMORY.MODE``."""
from .build import MEMORY_REGISTRY, build_memory
from .batch_update import (BatchGroups, batch_cluster_means, batch_groups, batch_hardest_features, batch_instance_slots,
                           batch_ranks, momentum_update_, sequential_momentum_update_)
from .cluster_memory import CM, ClusterMemory, CMhard, CMhybrid, CMhybrid_v2

__all__ = ["MEMORY_REGISTRY", "build_memory", "ClusterMemory", "CM", "CMhard", "CMhybrid", "CMhybrid_v2",
           "BatchGroups", "batch_groups", "batch_cluster_means", "batch_hardest_features", "batch_instance_slots",
           "batch_ranks", "momentum_update_", "sequential_momentum_update_"]
