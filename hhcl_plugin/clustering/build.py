"""The clusterer registry: ``CLUSTER.NAME`` selects the class, constructed from the config."""
from __future__ import annotations

from typing import Any

from ..utils.registry import Registry

CLUSTERER_REGISTRY = Registry("CLUSTERER")
CLUSTERER_REGISTRY.__doc__ = """Clusterers: ``cls(cfg)``, called with (N, D) features, returning a ClusteringResult."""


def build_clusterer(cfg: Any) -> Any:
    """The clusterer named by ``cfg.CLUSTER.NAME``, constructed from ``cfg``."""
    return CLUSTERER_REGISTRY.get(cfg.CLUSTER.NAME)(cfg)
