"""The HHCL / Cluster-Contrast clusterer: k-NN graph -> k-reciprocal encoding -> Jaccard graph -> DBSCAN."""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from .base import Clusterer, format_distance_stats
from .build import CLUSTERER_REGISTRY
from .dbscan import dbscan_precomputed_sparse
from .eps_rule import AUTO, EpsSetting, largest_eps, resolve_eps
from .jaccard import JaccardGraph, knn_jaccard_graph
from .knn import ArrayLike, KNNGraph
from .result import ClusteringResult, nearest_distance_stats

logger = logging.getLogger(__name__)


@CLUSTERER_REGISTRY.register(name="dbscan_jaccard")
class DBSCANJaccardClusterer(Clusterer):
    """k-NN -> k-reciprocal Jaccard distance -> DBSCAN, the HHCL / Cluster-Contrast recipe.

    Two steps, so that an eps sweep computes the distances once:
    :meth:`jaccard_graph` (every pair within a bound) and :meth:`cluster_graph` (DBSCAN
    at any eps up to that bound).  ``CLUSTER.JACCARD=sparse`` (default) never builds an
    N x N matrix; ``dense`` is the published implementation, kept to compare against.
    Both give identical labels.  The values come from a checked config
    (``config.check_cfg``) and are not checked again here.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        c = cfg.CLUSTER
        self.k1 = int(c.K1)
        self.k2 = int(c.K2)
        self.eps: EpsSetting = AUTO if c.EPS == AUTO else float(c.EPS)
        self.min_samples = int(c.MIN_SAMPLES)
        self.jaccard = str(c.JACCARD).lower()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k1={self.k1}, k2={self.k2}, eps={self.eps}, min_samples={self.min_samples}, "
                f"jaccard={self.jaccard}, knn_index={self.knn_index}, knn_bf16_screen={self.knn_bf16_screen})")

    @property
    def knn_k(self) -> int:
        """Neighbours per point in the k-NN graph, the point itself included."""
        return self.k1

    def cluster_knn(self, graph: KNNGraph) -> ClusteringResult:
        return self.cluster_graph(self.jaccard_graph(graph.features, knn=graph))

    def jaccard_graph(self, features: ArrayLike, bound: Optional[float] = None,
                      knn: Optional[KNNGraph] = None) -> JaccardGraph:
        """Jaccard distances of every pair within ``bound`` (default: the largest eps CLUSTER.EPS can mean).

        ``knn``: the k-NN graph of ``features`` when already searched (sharded under DDP).
        """
        bound = largest_eps(self.eps) if bound is None else float(bound)
        start = time.perf_counter()
        knn = self.knn_graph(features, knn)
        t_knn = time.perf_counter()
        logger.info("clustering: %s k-reciprocal Jaccard distance (k2=%d, pairs within %.3f)",
                    self.jaccard, self.k2, bound)
        graph = knn_jaccard_graph(knn, self.k1, self.k2, bound, method=self.jaccard)
        graph.seconds = {"knn": t_knn - start, **graph.seconds}
        return graph

    def no_clusters_hint(self, result: ClusteringResult) -> str:
        return (f"no clusters found with CLUSTER.EPS={self.eps} and CLUSTER.MIN_SAMPLES={self.min_samples} "
                f"(nearest-neighbour Jaccard distances: {format_distance_stats(result.distance_stats)}); "
                "raise CLUSTER.EPS")

    def few_clusters_hint(self) -> str:
        return f"lower CLUSTER.EPS (now {self.eps}) or CLUSTER.MIN_SAMPLES (now {self.min_samples})"

    def cluster_graph(self, graph: JaccardGraph, eps: Optional[float] = None) -> ClusteringResult:
        """DBSCAN labels at ``eps`` (default: the clusterer's, ``auto`` chosen from this graph), within its bound."""
        eps = resolve_eps(self.eps, graph.nearest) if eps is None else float(eps)
        if eps > graph.bound:
            raise ValueError(f"eps {eps} exceeds the Jaccard graph's bound {graph.bound}: pairs beyond it are "
                             "missing; compute the graph with bound >= the largest eps")
        start = time.perf_counter()
        logger.info("clustering: DBSCAN (eps=%.3f%s, min_samples=%d)", eps, f" by the {AUTO} rule" * (self.eps == AUTO),
                    self.min_samples)
        labels = dbscan_precomputed_sparse(graph.dist, eps, self.min_samples)
        seconds = dict(graph.seconds)
        seconds["dbscan"] = time.perf_counter() - start
        seconds["total"] = seconds["knn"] + seconds["jaccard"] + seconds["dbscan"]
        result = ClusteringResult.from_labels(labels, seconds, nearest_distance_stats(graph.nearest, eps))
        result.eps = eps
        logger.info("clustering: %d clusters, %d outliers of %d (Jaccard %.1fs, DBSCAN %.1fs)",
                    result.num_clusters, result.num_outliers, len(labels), seconds["jaccard"], seconds["dbscan"])
        return result
