"""Memory registry: ``MEMORY.MODE`` names a registered :class:`ClusterMemory` subclass."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
from yacs.config import CfgNode

from ..utils.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from .cluster_memory import ClusterMemory

MEMORY_REGISTRY = Registry("MEMORY")
MEMORY_REGISTRY.__doc__ = """
Registered classes are :class:`~hhcl_plugin.memory.ClusterMemory` subclasses, registered
under their class name, which is the ``MEMORY.MODE`` value that selects them.
"""


def build_memory(cfg: CfgNode, features: torch.Tensor, labels: Union[np.ndarray, torch.Tensor],
                 generator: Optional[torch.Generator] = None) -> "ClusterMemory":
    """The memory of this epoch, initialised from the features the pseudo labels were computed on.

    An unknown ``MEMORY.MODE`` raises the registry's ``KeyError``, which lists the valid modes.
    """
    return MEMORY_REGISTRY.get(cfg.MEMORY.MODE).from_features(cfg, features, labels, generator=generator)
