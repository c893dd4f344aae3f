"""DBSCAN on a sparse precomputed neighbourhood, with scikit-learn's exact labels.

The sparse Jaccard matrix stores only pairs closer than 1; every absent pair is at
distance 1 and so never a neighbour for ``eps < 1``.  scikit-learn's DBSCAN accepts such
a matrix too, but it sorts every row by distance in Python and keeps one neighbour
array per point; this version works on the CSR arrays directly:

* a point's neighbours are its stored entries with distance ``<= eps`` (explicitly
  stored zeros are neighbours; the point itself always is, as in scikit-learn);
* core points have at least ``min_samples`` neighbours, themselves included;
* clusters are the connected components of core points (scipy's csgraph);
* a border point (non-core, with a core neighbour) joins, among the clusters of its core
  neighbours, the one scikit-learn would reach first.  scikit-learn grows clusters one at
  a time, started from core points in index order, and a border point keeps the first
  label it gets, so that cluster is the one whose smallest core index is smallest;
* clusters are numbered by their smallest core index: the numbering scikit-learn uses.

The result is therefore equal to ``sklearn.cluster.DBSCAN(metric="precomputed")`` on the
dense matrix, not just up to a permutation (``tests/test_clustering.py`` checks it).
"""
from __future__ import annotations

import logging
from typing import Tuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)


def dbscan_precomputed_sparse(dist: sp.spmatrix, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels (int64, outliers -1, clusters 0..C-1) from a sparse distance matrix.

    Args:
        dist: N x N sparse matrix; stored entries are candidate neighbours at that
            distance, absent entries are not neighbours.  Should be symmetric.
        eps: neighbourhood radius (inclusive, as in scikit-learn).
        min_samples: neighbours, the point included, that make a core point.
    """
    if not sp.issparse(dist):
        raise TypeError(f"dist must be a scipy sparse matrix, got {type(dist).__name__}")
    n = dist.shape[0]
    if dist.shape != (n, n):
        raise ValueError(f"dist must be square, got shape {dist.shape}")
    if n == 0:
        return np.zeros(0, np.int64)
    csr = dist.tocsr()
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64  # 32-bit where it fits: half the memory
    rows = np.repeat(np.arange(n, dtype=index_dtype), np.diff(csr.indptr))
    # same comparison as scikit-learn (array <= python float, in the array's dtype)
    neighbour = (csr.data <= eps) & (rows != csr.indices)
    rows, cols = rows[neighbour], csr.indices[neighbour].astype(index_dtype, copy=False)
    del neighbour
    n_neighbors = np.bincount(rows, minlength=n) + 1  # + the point itself
    core = n_neighbors >= min_samples

    labels = np.full(n, -1, np.int64)
    core_idx = np.flatnonzero(core)
    if len(core_idx) == 0:
        return labels
    both = core[rows] & core[cols]
    pos = np.full(n, -1, index_dtype)
    pos[core_idx] = np.arange(len(core_idx), dtype=index_dtype)
    # the core-core edges, in row order already: their CSR needs no sort
    core_rows = pos[rows[both]]
    indptr = np.zeros(len(core_idx) + 1, np.int64)
    np.cumsum(np.bincount(core_rows, minlength=len(core_idx)), out=indptr[1:])
    del core_rows
    graph = sp.csr_matrix((np.ones(int(indptr[-1]), np.int8), pos[cols[both]], indptr),
                          shape=(len(core_idx), len(core_idx)))
    del both, pos
    n_comp, comp = connected_components(graph, directed=True, connection="weak")
    # number the components by their smallest core index (core_idx is ascending)
    first = np.full(n_comp, len(core_idx), np.int64)
    np.minimum.at(first, comp, np.arange(len(core_idx)))
    rank = np.empty(n_comp, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_comp)
    labels[core_idx] = rank[comp]

    # border points: an edge core -> non-core offers the core's cluster; keep the first
    to_border = core[rows] & ~core[cols]
    if to_border.any():
        border = cols[to_border]
        offered = labels[rows[to_border]]
        best = np.full(n, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(best, border, offered)
        has = best != np.iinfo(np.int64).max
        labels[has] = best[has]
    return labels


def relabel_consecutive(labels: np.ndarray) -> Tuple[np.ndarray, int]:
    """Compress cluster ids to 0..C-1, keeping their order and -1 for outliers.

    Order-preserving so that labels already numbered like scikit-learn's stay unchanged.
    Returns the new labels and C.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, np.int64)
    valid = labels >= 0
    if not valid.any():
        return out, 0
    uniq, inv = np.unique(labels[valid], return_inverse=True)
    out[valid] = inv.reshape(-1)
    return out, int(len(uniq))
