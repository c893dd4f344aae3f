"""Pseudo labels for unsupervised re-ID, in stages that pass one value along:
k-NN graph -> k-reciprocal encoding -> Jaccard graph -> labels (DBSCAN)."""
from .base import Clusterer
from .build import CLUSTERER_REGISTRY, build_clusterer
from .dbscan import dbscan_precomputed_sparse, relabel_consecutive
from .distributed import cluster_on_all_ranks, sharded_knn_graph
from .dbscan_jaccard import DBSCANJaccardClusterer
from .infomap_clusterer import InfomapClusterer
from .jaccard import (
    JaccardGraph,
    compute_jaccard_distance_dense,
    compute_jaccard_distance_sparse,
    dense_jaccard_graph,
    expanded_jaccard_graph,
    expanded_k_reciprocal_sets,
    k_reciprocal_sets,
    k_reciprocal_weights,
    knn_jaccard_graph,
)
from .knn import (
    KNNGraph,
    build_knn_graph,
    knn_search,
    order_by_row_score_index,
    pair_inner_products,
    prepare_features,
    rescore_top_k,
)
from .result import ClusteringResult, nearest_distance_stats

__all__ = [
    "CLUSTERER_REGISTRY",
    "ClusteringResult",
    "DBSCANJaccardClusterer",
    "InfomapClusterer",
    "JaccardGraph",
    "KNNGraph",
    "build_clusterer",
    "cluster_on_all_ranks",
    "sharded_knn_graph",
    "build_knn_graph",
    "nearest_distance_stats",
    "dbscan_precomputed_sparse",
    "relabel_consecutive",
    "compute_jaccard_distance_dense",
    "compute_jaccard_distance_sparse",
    "dense_jaccard_graph",
    "expanded_jaccard_graph",
    "expanded_k_reciprocal_sets",
    "k_reciprocal_sets",
    "k_reciprocal_weights",
    "knn_search",
    "order_by_row_score_index",
    "pair_inner_products",
    "rescore_top_k",
    "prepare_features",
    "knn_jaccard_graph",
    "Clusterer",
]
