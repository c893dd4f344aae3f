"""The base of every registered clusterer: the k-NN graph it starts from, and what to tell the user.

Every clusterer here starts from the k-NN graph of the features, and the training
hook, ``hhcl-cluster`` and the sharded search under DDP hand that graph around: the
hook searches it on all ranks (``knn_k`` neighbours each) and passes it in, a single
process lets the clusterer search it.  :class:`Clusterer` owns that contract, so a
subclass only turns a graph into labels (:meth:`Clusterer.cluster_knn`) and says, in
the user's own config keys, what to change when that finds no cluster; the hook knows
no clusterer's settings.  See ``docs/architecture.md`` for registering one.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

from .knn import ArrayLike, KNNGraph, build_knn_graph
from .result import ClusteringResult, release_free_heap

logger = logging.getLogger(__name__)


def format_distance_stats(stats: Optional[Dict[str, float]]) -> str:
    """``name value, ...`` of a result's nearest-distance statistics, for messages."""
    return ", ".join(f"{k} {v:.3f}" for k, v in (stats or {}).items()) or "n/a"


class Clusterer:
    """k-NN graph (built or given) -> labels, configured from ``cfg.CLUSTER``.

    Subclasses set :attr:`knn_k` and implement :meth:`cluster_knn`; they may override
    :meth:`no_clusters_hint` and :meth:`few_clusters_hint` to name their own settings.
    ``CLUSTER.KNN_INDEX`` and ``CLUSTER.KNN_BF16_SCREEN`` are read here, once.
    """

    def __init__(self, cfg: Any) -> None:
        self.knn_index = str(cfg.CLUSTER.KNN_INDEX).lower()
        self.knn_bf16_screen = bool(cfg.CLUSTER.KNN_BF16_SCREEN)

    @property
    def knn_k(self) -> int:
        """Neighbours per point in the k-NN graph, the point itself included."""
        raise NotImplementedError

    def knn_graph(self, features: ArrayLike, knn: Optional[KNNGraph] = None) -> KNNGraph:
        """``knn`` when given (searched already, e.g. sharded under DDP), else the k-NN graph of ``features``."""
        if knn is not None:
            return knn
        logger.info("clustering %d features: k-NN (%s, k=%d)", len(features), self.knn_index, self.knn_k)
        graph = build_knn_graph(features, self.knn_k, index=self.knn_index, screen=self.knn_bf16_screen)
        release_free_heap()  # the search's temporaries' pages go back before the next stage needs memory
        return graph

    def __call__(self, features: ArrayLike, knn: Optional[KNNGraph] = None) -> ClusteringResult:
        """Labels of ``features``; ``knn``: their k-NN graph when already searched."""
        start = time.perf_counter()
        graph = self.knn_graph(features, knn)
        knn_seconds = time.perf_counter() - start
        result = self.cluster_knn(graph)
        result.seconds = {**result.seconds, "knn": knn_seconds, "total": time.perf_counter() - start}
        logger.info("clustering: %d clusters, %d outliers of %d in %.1fs (k-NN %.1fs)", result.num_clusters,
                    result.num_outliers, len(result.labels), result.seconds["total"], knn_seconds)
        return result

    def cluster_knn(self, graph: KNNGraph) -> ClusteringResult:
        """Labels from the k-NN graph (``graph`` may be dropped as soon as it is used)."""
        raise NotImplementedError

    def no_clusters_hint(self, result: ClusteringResult) -> str:
        """The one-line message when ``result`` has no cluster: what was found and which setting to change."""
        return (f"no clusters found by {type(self).__name__} (nearest-neighbour distances: "
                f"{format_distance_stats(result.distance_stats)}); check the CLUSTER settings")

    def few_clusters_hint(self) -> str:
        """What to change when everything fell into a single cluster."""
        return "check the CLUSTER settings"
