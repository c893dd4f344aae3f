"""What every clusterer returns: pseudo labels plus what is needed to judge and tune them."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from .dbscan import relabel_consecutive


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
    eps: Optional[float] = None  # the DBSCAN radius used, where there is one (CLUSTER.EPS auto picks it per run)

    @classmethod
    def from_labels(cls, labels: np.ndarray, seconds: Dict[str, float],
                    distance_stats: Optional[Dict[str, float]] = None) -> "ClusteringResult":
        """Numbered 0..C-1 in their order, outliers -1."""
        labels, num_clusters = relabel_consecutive(labels)
        return cls(labels=labels, num_clusters=num_clusters, num_outliers=int((labels < 0).sum()),
                   seconds=seconds, distance_stats=distance_stats or {})


def nearest_distance_stats(nearest: np.ndarray, eps: Optional[float] = None) -> Dict[str, float]:
    """Percentiles of the per-point nearest-neighbour distance (1.0 when a point has none)."""
    if len(nearest) == 0:
        return {}
    q = np.percentile(nearest.astype(np.float64), [0, 5, 25, 50, 75, 95, 100])
    stats = {f"nn_{name}": float(v) for name, v in zip(("min", "p5", "p25", "median", "p75", "p95", "max"), q)}
    if eps is not None:
        stats["nn_frac_within_eps"] = float(np.mean(nearest <= eps))
    return stats


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
