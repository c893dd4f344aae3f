"""The HHCL / Cluster-Contrast clusterer: k-NN graph -> k-reciprocal encoding -> Jaccard graph -> DBSCAN."""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from .build import CLUSTERER_REGISTRY
from .dbscan import dbscan_precomputed_sparse
from .eps_rule import AUTO, EpsSetting, largest_eps, resolve_eps
from .jaccard import JaccardGraph, dense_jaccard_graph, expanded_jaccard_graph, expanded_weights, k_reciprocal_weights
from .knn import ArrayLike, KNNGraph, build_knn_graph
from .result import ClusteringResult, nearest_distance_stats, release_free_heap

logger = logging.getLogger(__name__)


@CLUSTERER_REGISTRY.register(name="dbscan_jaccard")
class DBSCANJaccardClusterer:
    """k-NN -> k-reciprocal Jaccard distance -> DBSCAN, the HHCL / Cluster-Contrast recipe.

    Two steps, so that an eps sweep computes the distances once:
    :meth:`jaccard_graph` (every pair within a bound) and :meth:`cluster_graph` (DBSCAN
    at any eps up to that bound).  ``CLUSTER.JACCARD=sparse`` (default) never builds an
    N x N matrix; ``dense`` is the published implementation, kept to compare against.
    Both give identical labels.  The values come from a checked config
    (``config.check_cfg``) and are not checked again here.
    """

    def __init__(self, cfg: Any) -> None:
        c = cfg.CLUSTER
        self.k1 = int(c.K1)
        self.k2 = int(c.K2)
        self.eps: EpsSetting = AUTO if c.EPS == AUTO else float(c.EPS)
        self.min_samples = int(c.MIN_SAMPLES)
        self.jaccard = str(c.JACCARD).lower()
        self.knn_index = str(c.KNN_INDEX).lower()
        self.knn_bf16_screen = bool(c.KNN_BF16_SCREEN)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k1={self.k1}, k2={self.k2}, eps={self.eps}, min_samples={self.min_samples}, "
                f"jaccard={self.jaccard}, knn_index={self.knn_index}, knn_bf16_screen={self.knn_bf16_screen})")

    @property
    def knn_k(self) -> int:
        """Neighbours per point in the k-NN graph, the point itself included."""
        return self.k1

    def __call__(self, features: ArrayLike, knn: Optional[KNNGraph] = None) -> ClusteringResult:
        return self.cluster_graph(self.jaccard_graph(features, knn=knn))

    def jaccard_graph(self, features: ArrayLike, bound: Optional[float] = None,
                      knn: Optional[KNNGraph] = None) -> JaccardGraph:
        """Jaccard distances of every pair within ``bound`` (default: the largest eps CLUSTER.EPS can mean).

        ``knn``: the k-NN graph of ``features`` when already searched (sharded under DDP).
        """
        bound = largest_eps(self.eps) if bound is None else float(bound)
        start = time.perf_counter()
        if knn is None:
            logger.info("clustering %d features: k-NN (%s, k1=%d)", len(features), self.knn_index, self.k1)
            knn = build_knn_graph(features, self.k1, index=self.knn_index, screen=self.knn_bf16_screen)
            release_free_heap()
        t_knn = time.perf_counter()
        logger.info("clustering: %s k-reciprocal Jaccard distance (k2=%d, pairs within %.3f)",
                    self.jaccard, self.k2, bound)
        weights = k_reciprocal_weights(knn, self.k1)
        rank = knn.idx
        del knn
        release_free_heap()  # each stage leaves its temporaries' pages in the heap; the next needs them back
        t_weights = time.perf_counter()
        if self.jaccard == "sparse":
            vq = expanded_weights(weights, rank, self.k2)
            del weights, rank  # not needed again: ~40 MB per 100,000 images
            release_free_heap()
            t_expanded = time.perf_counter()
            graph = expanded_jaccard_graph(vq, bound)
            del vq
            graph.seconds["query_expansion"] = t_expanded - t_weights
        else:
            graph = dense_jaccard_graph(weights, rank, self.k2, bound)
            del weights, rank
        release_free_heap()
        end = time.perf_counter()
        graph.seconds = {"knn": t_knn - start, "jaccard": end - t_knn, "jaccard_k_reciprocal": t_weights - t_knn,
                         **{f"jaccard_{k}": v for k, v in graph.seconds.items()}}
        return graph

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
        logger.info("clustering: %d clusters, %d outliers of %d in %.1fs (k-NN %.1fs, Jaccard %.1fs, DBSCAN %.1fs)",
                    result.num_clusters, result.num_outliers, len(labels), seconds["total"], seconds["knn"],
                    seconds["jaccard"], seconds["dbscan"])
        return result
