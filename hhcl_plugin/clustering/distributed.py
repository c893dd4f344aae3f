"""Clustering under DDP: every rank searches the k-NN of its slice of rows, rank 0 does the rest.

The k-NN search is the one stage that grows as N^2 D; the later stages work on the
neighbour lists only.  So instead of rank 0 clustering alone while the other
processes wait, each rank searches its query rows against all features on its own
device (:func:`~hhcl_plugin.clustering.knn.knn_rows`), the lists are gathered, and rank 0
continues from the gathered k-NN graph.  A shard's lists do not depend on the number
of shards, so the labels equal those of one process.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..utils import comm
from .knn import ArrayLike, KNNGraph, _put_self_first, knn_rows, prepare_features
from .result import ClusteringResult


def shard_bounds(n: int, world: int, block_size: int) -> np.ndarray:
    """Row boundaries of ``world`` shards, at block boundaries, as even in blocks as possible."""
    blocks = -(-n // block_size)
    return np.minimum(np.linspace(0, blocks, world + 1).round().astype(np.int64) * block_size, n)


def sharded_knn_graph(features: ArrayLike, k: int, *, rank: int, world: int, gather: Any,
                      block_size: int = 2048) -> KNNGraph:
    """The k-NN graph with this rank searching its shard; ``gather`` concatenates tensors in rank order."""
    x = prepare_features(features)
    k = int(max(1, min(k, x.shape[0])))
    bounds = shard_bounds(x.shape[0], world, block_size)
    sims, idx = knn_rows(x, k, slice(int(bounds[rank]), int(bounds[rank + 1])), block_size=block_size)
    device = x.device
    sims = gather(torch.from_numpy(sims).to(device)).cpu().numpy()
    idx = gather(torch.from_numpy(idx).to(device)).cpu().numpy()
    return KNNGraph(x, *_put_self_first(x, sims, idx))


def cluster_on_all_ranks(clusterer: Any, features: ArrayLike) -> Optional[ClusteringResult]:
    """Called on every rank: the clustering result on rank 0, None elsewhere.

    In one process the clusterer runs as usual.  Under DDP the k-NN graph is sharded
    (``clusterer.knn_k`` neighbours, self included) and rank 0's clusterer starts from it.
    """
    if comm.get_world_size() == 1:
        return clusterer(features)
    graph = sharded_knn_graph(features, clusterer.knn_k, rank=comm.get_rank(), world=comm.get_world_size(),
                              gather=comm.all_gather_tensor)
    return clusterer(features, knn=graph) if comm.is_main_process() else None
