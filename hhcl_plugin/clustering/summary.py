"""What one clustering looks like in numbers: sizes, outliers and, where identities are known, NMI / ARI."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def has_ground_truth(ground_truth: Optional[np.ndarray]) -> bool:
    """Whether the dataset knows its training identities (a folder of crops gives every image the same one)."""
    return ground_truth is not None and len(np.unique(ground_truth)) > 1


def singletons_for_outliers(labels: np.ndarray) -> np.ndarray:
    """Give every outlier its own cluster id, so clustering scores count them as unmatched."""
    out = labels.copy()
    outliers = out < 0
    out[outliers] = out.max(initial=-1) + 1 + np.arange(outliers.sum())
    return out


def ground_truth_scores(labels: np.ndarray, ground_truth: np.ndarray) -> Dict[str, float]:
    """NMI and ARI of the pseudo labels against the identities (outliers count as singletons)."""
    dense = singletons_for_outliers(np.asarray(labels))
    return {"nmi": float(normalized_mutual_info_score(ground_truth, dense)),
            "ari": float(adjusted_rand_score(ground_truth, dense))}


def cluster_summary(labels: np.ndarray, ground_truth: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Clusters, outliers, clustered images, median and largest cluster size, and NMI / ARI when known."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    outliers = int((labels < 0).sum())
    summary = {"clusters": int(len(sizes)), "outlier_pct": 100.0 * outliers / max(len(labels), 1),
               "clustered": int(len(labels) - outliers),
               "median_size": float(np.median(sizes)) if len(sizes) else 0.0,
               "largest_size": int(sizes.max(initial=0))}
    if has_ground_truth(ground_truth):
        summary.update(ground_truth_scores(labels, ground_truth))
    return summary
