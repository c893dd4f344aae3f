"""Clusterers that turn the epoch's features into pseudo labels, selected by ``CLUSTER.NAME``."""
from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import scipy.sparse as sp
import torch

from ..utils.errors import ClusteringError
from ..utils.registry import Registry
from .dbscan import dbscan_precomputed_sparse, relabel_consecutive
from .jaccard import compute_jaccard_distance_dense, compute_jaccard_distance_sparse
from .knn import KNN_INDEX_TYPES, ArrayLike, as_float32_tensor, knn_search

logger = logging.getLogger(__name__)

CLUSTERER_REGISTRY = Registry("CLUSTERER")
CLUSTERER_REGISTRY.__doc__ = """Clusterers: ``cls(cfg)``, called with (N, D) features, returning a ClusteringResult."""

JACCARD_MODES = ("sparse", "dense")


@dataclass
class ClusteringResult:
    """Pseudo labels of one clustering run, plus what is needed to judge and tune it.

    ``distance_stats`` summarises each point's distance to its nearest other point
    (``nn_*``), which tells at a glance whether ``eps`` sits below every distance (no
    clusters) or above most of them (one giant cluster).
    """

    labels: np.ndarray  # int64 (N,), -1 = outlier, clusters 0..C-1
    num_clusters: int
    num_outliers: int
    seconds: Dict[str, float] = field(default_factory=dict)
    distance_stats: Dict[str, float] = field(default_factory=dict)


def nearest_distance_stats(nearest: np.ndarray, eps: Optional[float] = None) -> Dict[str, float]:
    """Percentiles of the per-point nearest-neighbour distance (1.0 when a point has none)."""
    if len(nearest) == 0:
        return {}
    q = np.percentile(nearest.astype(np.float64), [0, 5, 25, 50, 75, 95, 100])
    stats = {f"nn_{name}": float(v) for name, v in zip(("min", "p5", "p25", "median", "p75", "p95", "max"), q)}
    if eps is not None:
        stats["nn_frac_within_eps"] = float(np.mean(nearest <= eps))
    return stats


def nearest_other_sparse(dist: sp.csr_matrix) -> np.ndarray:
    """Each row's smallest stored off-diagonal distance, 1.0 where there is none."""
    n = dist.shape[0]
    rows = np.repeat(np.arange(n), np.diff(dist.indptr))
    data = dist.data.astype(np.float32)
    off = rows != dist.indices
    out = np.ones(n, np.float32)
    np.minimum.at(out, rows[off], data[off])
    return out


def nearest_other_dense(dist: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Each row's smallest off-diagonal distance, without copying the matrix."""
    n = dist.shape[0]
    out = np.ones(n, np.float32)
    for a in range(0, n, chunk):
        blk = dist[a:a + chunk]
        r = np.arange(blk.shape[0])
        diag = blk[r, a + r].copy()
        blk[r, a + r] = np.inf
        out[a:a + chunk] = np.minimum(blk.min(axis=1), 1.0)
        blk[r, a + r] = diag
    return out


@CLUSTERER_REGISTRY.register(name="dbscan_jaccard")
class DBSCANJaccardClusterer:
    """k-NN -> k-reciprocal Jaccard distance -> DBSCAN, the HHCL / Cluster-Contrast recipe.

    ``CLUSTER.JACCARD=sparse`` (default) never builds an N x N matrix; ``dense`` is the
    published implementation, kept to compare against.  Both give identical labels.
    """

    def __init__(self, cfg: Any) -> None:
        c = cfg.CLUSTER
        self.k1 = int(c.K1)
        self.k2 = int(c.K2)
        self.eps = float(c.EPS)
        self.min_samples = int(c.MIN_SAMPLES)
        self.jaccard = str(c.JACCARD).lower()
        self.knn_index = str(c.KNN_INDEX).lower()
        self.knn_bf16_screen = bool(c.KNN_BF16_SCREEN)
        if self.jaccard not in JACCARD_MODES:
            raise ClusteringError(f"CLUSTER.JACCARD must be one of {', '.join(JACCARD_MODES)}, got '{c.JACCARD}'")
        if self.knn_index not in KNN_INDEX_TYPES:
            raise ClusteringError(f"CLUSTER.KNN_INDEX must be one of {', '.join(KNN_INDEX_TYPES)}, got '{c.KNN_INDEX}'")
        if self.k1 < 1 or self.k2 < 1:
            raise ClusteringError(f"CLUSTER.K1 and CLUSTER.K2 must be >= 1, got K1={self.k1}, K2={self.k2}")
        if self.k2 > self.k1:
            raise ClusteringError(f"CLUSTER.K2 ({self.k2}) cannot exceed CLUSTER.K1 ({self.k1})")
        if not 0.0 < self.eps < 1.0:
            raise ClusteringError(f"CLUSTER.EPS must be in (0, 1) for Jaccard distances, got {self.eps}")
        if self.min_samples < 1:
            raise ClusteringError(f"CLUSTER.MIN_SAMPLES must be >= 1, got {self.min_samples}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k1={self.k1}, k2={self.k2}, eps={self.eps}, min_samples={self.min_samples}, "
                f"jaccard={self.jaccard}, knn_index={self.knn_index}, knn_bf16_screen={self.knn_bf16_screen})")

    def __call__(self, features: ArrayLike) -> ClusteringResult:
        x = _prepare_features(features)
        n = x.shape[0]
        seconds: Dict[str, float] = {}
        start = time.perf_counter()
        logger.info("clustering %d features: k-NN (%s, k1=%d)", n, self.knn_index, self.k1)
        knn = knn_search(x, self.k1, index=self.knn_index, screen=self.knn_bf16_screen)
        release_free_heap()
        seconds["knn"] = time.perf_counter() - start

        t = time.perf_counter()
        logger.info("clustering: %s k-reciprocal Jaccard distance (k2=%d)", self.jaccard, self.k2)
        sub: Dict[str, float] = {}
        if self.jaccard == "sparse":
            dist = compute_jaccard_distance_sparse(x, self.k1, self.k2, knn=knn, timings=sub)
        else:
            dist = compute_jaccard_distance_dense(x, self.k1, self.k2, knn=knn, timings=sub)
        del knn
        release_free_heap()
        seconds["jaccard"] = time.perf_counter() - t
        seconds.update({f"jaccard_{k}": v for k, v in sub.items() if k != "knn"})

        t = time.perf_counter()
        logger.info("clustering: DBSCAN (eps=%.3f, min_samples=%d)", self.eps, self.min_samples)
        if self.jaccard == "sparse":
            labels = dbscan_precomputed_sparse(dist, self.eps, self.min_samples)
            nearest = nearest_other_sparse(dist)
        else:
            from sklearn.cluster import DBSCAN

            labels = DBSCAN(eps=self.eps, min_samples=self.min_samples, metric="precomputed",
                            n_jobs=-1).fit_predict(dist)
            nearest = nearest_other_dense(dist)
        del dist
        release_free_heap()
        labels, num_clusters = relabel_consecutive(labels)
        seconds["dbscan"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - start
        num_outliers = int((labels < 0).sum())
        stats = nearest_distance_stats(nearest, self.eps)
        logger.info("clustering: %d clusters, %d outliers of %d in %.1fs (k-NN %.1fs, Jaccard %.1fs, DBSCAN %.1fs)",
                    num_clusters, num_outliers, n, seconds["total"], seconds["knn"], seconds["jaccard"],
                    seconds["dbscan"])
        return ClusteringResult(labels=labels, num_clusters=num_clusters, num_outliers=num_outliers,
                                seconds=seconds, distance_stats=stats)


def release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    The clustering stages allocate and free hundreds of MB in blocks that glibc keeps
    in its heap; without a trim the next stage (and the training after it) would start
    from a resident size a few hundred MB higher, which is what bounds the peak.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _prepare_features(features: ArrayLike) -> torch.Tensor:
    """float32 (N, D) tensor, L2-normalised: the Jaccard weights assume cosine similarities."""
    x = as_float32_tensor(features)
    if x.shape[0] == 0:
        raise ClusteringError("no features to cluster (the training set is empty)")
    norms = x.norm(dim=1)  # NaN or Inf anywhere in a row makes its norm NaN or Inf: no second pass
    if not bool(torch.isfinite(norms).all()):
        raise ClusteringError("features contain NaN or Inf; check the model and the feature extraction")
    if bool(((norms - 1).abs() > 1e-3).any()):
        logger.warning("clustering: features are not L2-normalised (norms %.3f..%.3f); normalising them",
                       float(norms.min()), float(norms.max()))
        x = torch.nn.functional.normalize(x, dim=1)
    return x


def build_clusterer(cfg: Any) -> Any:
    """The clusterer named by ``cfg.CLUSTER.NAME``, constructed from ``cfg``."""
    return CLUSTERER_REGISTRY.get(cfg.CLUSTER.NAME)(cfg)
