"""InfoMap on the k-NN graph, the alternative clusterer Cluster-Contrast recommends.

Each point links to its ``K`` nearest neighbours whose cosine similarity is at least
``MIN_SIM``, weighted by that similarity; InfoMap (the ``infomap`` package) splits the
directed graph into the modules a random walk stays in longest.  There is no eps to
tune, which is why it holds up better than DBSCAN when the feature scale drifts over
training.  Modules smaller than ``MIN_SIZE`` (singletons, by default) are outliers,
like DBSCAN's noise, so the memory and the sampler see the same kind of labels.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from .base import Clusterer, format_distance_stats
from .build import CLUSTERER_REGISTRY
from .knn import KNNGraph
from .result import ClusteringResult, nearest_distance_stats

logger = logging.getLogger(__name__)


def knn_link_matrix(graph: KNNGraph, min_sim: float) -> sp.csr_matrix:
    """Directed links i -> j (j among i's neighbours, j != i, cosine >= ``min_sim``), weighted by cosine."""
    n, k = graph.idx.shape
    rows = np.repeat(np.arange(n), k - 1)
    cols = graph.idx[:, 1:].ravel()
    sims = graph.sims[:, 1:].ravel()
    keep = (cols >= 0) & (cols != rows) & (sims >= min_sim)
    return sp.csr_matrix((sims[keep].astype(np.float64), (rows[keep], cols[keep])), shape=(n, n))


def infomap_modules(links: sp.csr_matrix, *, seed: int, trials: int) -> np.ndarray:
    """InfoMap's two-level module of every node (int64, numbered from 0), isolated nodes included."""
    import infomap

    n = links.shape[0]
    im = infomap.Infomap(two_level=True, directed=True, silent=True, seed=max(1, int(seed)), num_trials=int(trials))
    im.add_nodes(range(n))
    coo = links.tocoo()
    im.add_links(zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()))
    run = im.run()  # a Result from infomap 2.16 on; before that None, and the modules on im
    modules = np.full(n, -1, np.int64)
    for node, module in (run.modules() if run is not None else im.get_modules()).items():
        modules[node] = module
    if (modules < 0).any():  # cannot happen: every node was added
        raise RuntimeError("InfoMap left nodes without a module")
    return modules


def small_modules_as_outliers(modules: np.ndarray, min_size: int) -> np.ndarray:
    """Modules with fewer than ``min_size`` members become outliers (-1); others keep their id."""
    _, inverse, counts = np.unique(modules, return_inverse=True, return_counts=True)
    return np.where(counts[inverse.reshape(-1)] >= min_size, modules, -1)


@CLUSTERER_REGISTRY.register(name="infomap")
class InfomapClusterer(Clusterer):
    """k-NN graph -> InfoMap modules -> labels, with ``CLUSTER.INFOMAP.*`` and ``CLUSTER.KNN_*`` settings."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        c = cfg.CLUSTER
        self.k = int(c.INFOMAP.K)
        self.min_sim = float(c.INFOMAP.MIN_SIM)
        self.min_size = int(c.INFOMAP.MIN_SIZE)
        self.trials = int(c.INFOMAP.TRIALS)
        self.seed = int(cfg.SEED)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k={self.k}, min_sim={self.min_sim}, min_size={self.min_size}, "
                f"trials={self.trials}, knn_index={self.knn_index})")

    @property
    def knn_k(self) -> int:
        """Neighbours per point in the k-NN graph: K and the point itself, which comes first."""
        return self.k + 1

    def cluster_knn(self, graph: KNNGraph) -> ClusteringResult:
        start = time.perf_counter()
        links = knn_link_matrix(graph, self.min_sim)
        nearest = 1.0 - graph.sims[:, 1] if graph.sims.shape[1] > 1 else np.ones(len(graph.sims), np.float32)
        del graph
        logger.info("clustering: InfoMap on %d links (cosine >= %.2f)", links.nnz, self.min_sim)
        modules = infomap_modules(links, seed=self.seed, trials=self.trials)
        labels = small_modules_as_outliers(modules, self.min_size)
        seconds = {"infomap": time.perf_counter() - start}
        # the nearest cosine distance 1 - cos, next to MIN_SIM's 1 - MIN_SIM
        result = ClusteringResult.from_labels(labels, seconds, nearest_distance_stats(nearest, 1.0 - self.min_sim))
        logger.info("clustering: %d clusters, %d outliers of %d (InfoMap %.1fs)", result.num_clusters,
                    result.num_outliers, len(labels), seconds["infomap"])
        return result

    def no_clusters_hint(self, result: ClusteringResult) -> str:
        return (f"no clusters found: every InfoMap module is smaller than CLUSTER.INFOMAP.MIN_SIZE={self.min_size} "
                f"(nearest-neighbour cosine distances: {format_distance_stats(result.distance_stats)}); lower "
                f"CLUSTER.INFOMAP.MIN_SIM (now {self.min_sim})")

    def few_clusters_hint(self) -> str:
        return f"raise CLUSTER.INFOMAP.MIN_SIM (now {self.min_sim})"
