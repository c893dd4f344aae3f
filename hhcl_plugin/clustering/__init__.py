"""Pseudo labels for unsupervised re-ID: k-NN, k-reciprocal Jaccard distance, DBSCAN."""
from .build import (
    CLUSTERER_REGISTRY,
    ClusteringResult,
    DBSCANJaccardClusterer,
    build_clusterer,
    nearest_distance_stats,
)
from .dbscan import dbscan_precomputed_sparse, relabel_consecutive
from .jaccard import (
    compute_jaccard_distance_dense,
    compute_jaccard_distance_sparse,
    expanded_k_reciprocal_sets,
    k_reciprocal_sets,
    k_reciprocal_weights,
)
from .knn import knn_search
from .synthetic import make_clustered_features

__all__ = [
    "CLUSTERER_REGISTRY",
    "ClusteringResult",
    "DBSCANJaccardClusterer",
    "build_clusterer",
    "nearest_distance_stats",
    "dbscan_precomputed_sparse",
    "relabel_consecutive",
    "compute_jaccard_distance_dense",
    "compute_jaccard_distance_sparse",
    "expanded_k_reciprocal_sets",
    "k_reciprocal_sets",
    "k_reciprocal_weights",
    "knn_search",
    "make_clustered_features",
]
