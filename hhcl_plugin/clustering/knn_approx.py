"""Approximate k-NN for large N: an inverted file searched with blocked matrix products.

The exact search costs N^2 D; at a million 2048-d features that is hours on a CPU.
Here the features are split into ``L`` cells (the nearest of ``L`` centroids, spherical
k-means on a sample), and the points of one cell are compared only with the points of
the ``nprobe`` cells whose centroids are nearest to their own centroid, so each point
meets ~``nprobe N / L`` others instead of N.  With ``L = sqrt(nprobe N)`` the centroid
assignment and the search cost the same, ``~2 N D sqrt(nprobe N)`` flops in all.

Unlike a per-query index scan (faiss IVF: one query against one list at a time), a
cell's queries and its candidates form two dense matrices, so the search runs as large
matrix products at the speed of the CPU's BLAS.  Where the CPU multiplies bfloat16 in
hardware the candidates are picked in bfloat16 (``k + spare`` per row), then every
listed neighbour is re-scored exactly as the exact search scores it
(:func:`~hhcl_plugin.clustering.knn.pair_inner_products`) and ordered by score, then
index.  So a neighbour found here has the very float32 score the exact search gives it,
and the lists differ from the exact ones only where a true neighbour lies in a cell
that was not probed.

Where it loses: points far from every centroid (a re-ID set's junk images: random
directions) have neighbours scattered over all cells, so their lists are mostly
approximate; they are outliers for DBSCAN either way.  ``docs/clustering.md`` has the
recall and the labels' ARI against the exact search.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Tuple

import numpy as np
import torch

from ..utils.progress import progress
from .knn import _descending_key, cpu_has_bf16_matmul, pair_inner_products

logger = logging.getLogger(__name__)

# CLUSTER.KNN_INDEX auto searches exactly below this many features and approximately
# from it on; where the exact search beats the approximate one (docs/clustering.md)
AUTO_CROSSOVER = 60_000
DEFAULT_NPROBE = 12
DEFAULT_SPARE = 8
_MIN_CELL = 256  # smaller cells make products too small to run at the BLAS's speed


def resolve_knn_index(index: str, n: int, crossover: int = AUTO_CROSSOVER) -> str:
    """``exact`` or ``ivf`` for ``n`` features: ``auto`` picks by the measured crossover."""
    if index != "auto":
        return index
    return "exact" if n < crossover else "ivf"


def approximate_knn(
    x: torch.Tensor,
    k: int,
    *,
    nprobe: int = DEFAULT_NPROBE,
    cells: Optional[int] = None,
    spare: int = DEFAULT_SPARE,
    low_precision: Optional[bool] = None,
    seed: int = 0,
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(sims, idx)`` (float32 / int64, (N, k)) of checked unit features ``x``, or None where N is too small.

    Args:
        nprobe: cells searched per cell of queries (its own included).
        cells: number of cells ``L``; default ``sqrt(nprobe N)``, at most ``N / 256`` (smaller
            cells make products too small to run at full speed).
        spare: candidates kept per row beyond ``k`` for the exact re-scoring.
        low_precision: pick candidates with bfloat16 products (default: where the CPU
            has bfloat16 units); False: float32 products.
        seed: the centroid sample.

    Returns None when fewer than two cells would be used (the caller then searches
    exactly).  Rows are ordered by exact score, then index; a row whose probed cells
    hold fewer than ``k`` points ends with ``-1`` slots.
    """
    n = x.shape[0]
    nprobe = int(max(1, nprobe))
    n_cells = int(cells if cells is not None else round(math.sqrt(nprobe * n)))
    n_cells = min(n_cells, n // _MIN_CELL)
    if n_cells < 2:
        return None
    nprobe = min(nprobe, n_cells)
    if low_precision is None:
        low_precision = not x.is_cuda and cpu_has_bf16_matmul()
    dtype = torch.bfloat16 if low_precision else torch.float32
    kk = int(min(k + max(0, spare), n))
    logger.info("k-NN: approximate search, %d cells, %d probed per cell, %d candidates per row in %s", n_cells,
                nprobe, kk, "bfloat16" if low_precision else "float32")
    with torch.no_grad():
        # one converted copy (half the features' size) instead of converting every gathered block again
        x_lp = x.to(dtype)
        centroids = _train_centroids(x_lp, n_cells, seed)
        probes = _probed_cells(x_lp, centroids, nprobe)
        del centroids
        cand = _cell_candidates(x_lp, probes, kk)
        del x_lp, probes
    return _rescored_top_k(x, cand, min(k, n))


def _train_centroids(x: torch.Tensor, n_cells: int, seed: int, iters: int = 4) -> torch.Tensor:
    """Spherical k-means centroids (unit rows, ``x``'s dtype) from a seeded sample of ~32 points per cell."""
    n = x.shape[0]
    dtype = x.dtype
    rng = np.random.default_rng(seed)
    sample = x[torch.from_numpy(np.sort(rng.choice(n, min(n, 32 * n_cells), replace=False))).to(x.device)]
    centroids = sample[torch.from_numpy(rng.choice(len(sample), n_cells, replace=False)).to(x.device)].clone()
    for _ in range(iters):
        assign = (sample @ centroids.T).argmax(dim=1)
        sums = torch.zeros(n_cells, x.shape[1], dtype=torch.float32, device=x.device)
        sums.index_add_(0, assign, sample.float())
        norms = sums.norm(dim=1, keepdim=True)
        filled = norms.squeeze(1) > 0  # an empty cell keeps its centroid
        centroids[filled] = (sums[filled] / norms[filled]).to(dtype)
    return centroids


def _probed_cells(x: torch.Tensor, centroids: torch.Tensor, nprobe: int, block: int = 8192) -> np.ndarray:
    """(N, nprobe) cells each row searches: those of its nearest centroids, the nearest (its own cell) first."""
    n = x.shape[0]
    probes = np.empty((n, nprobe), np.int64)
    starts = range(0, n, block)
    for a in progress(starts, total=len(starts), desc="k-NN cells"):
        probes[a:a + block] = torch.topk(x[a:a + block] @ centroids.T, nprobe, dim=1).indices.cpu().numpy()
    return probes


def _cell_candidates(x: torch.Tensor, probes: np.ndarray, kk: int, query_block: int = 4096) -> np.ndarray:
    """(N, kk) candidate indices (-1: none): each row's best by ``x``'s products over the cells it probes.

    A row's own cell (``probes[:, 0]``) holds it.  Cell by cell, the points of the cell
    are scored against every row that probes it, in one product, and merged into those
    rows' running best lists.
    """
    n = x.shape[0]
    n_cells = int(probes.max()) + 1
    members = _group_by(probes[:, 0], n_cells)
    askers = _group_by(probes.ravel(), n_cells, values=np.repeat(np.arange(n, dtype=np.int64), probes.shape[1]))
    best_v = torch.full((n, kk), -math.inf, dtype=torch.float32, device=x.device)
    best_i = torch.full((n, kk), -1, dtype=torch.int64, device=x.device)
    for cell in progress(range(n_cells), total=n_cells, desc="k-NN approximate"):
        pool = members[cell]
        if len(pool) == 0:
            continue
        pool_t = torch.from_numpy(pool).to(x.device)
        pool_x = x[pool_t]
        take = min(kk, len(pool))
        for a in range(0, len(askers[cell]), query_block):
            rows = torch.from_numpy(askers[cell][a:a + query_block]).to(x.device)
            v, pos = torch.topk((x[rows] @ pool_x.T).float(), take, dim=1)
            top_v, top_pos = torch.topk(torch.cat([best_v[rows], v], dim=1), kk, dim=1)
            best_v[rows] = top_v
            best_i[rows] = torch.gather(torch.cat([best_i[rows], pool_t[pos]], dim=1), 1, top_pos)
    return best_i.cpu().numpy()


def _group_by(keys: np.ndarray, n_groups: int, values: Optional[np.ndarray] = None) -> list:
    """``values`` (default: the positions) split by ``keys``, ascending within each group."""
    order = np.argsort(keys, kind="stable")
    values = order if values is None else values[order]
    bounds = np.zeros(n_groups + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n_groups), out=bounds[1:])
    return [values[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def _rescored_top_k(x: torch.Tensor, cand: np.ndarray, k: int,
                    rows_per_chunk: int = 65536) -> Tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each row's candidates by exact score (decreasing), then index (increasing)."""
    n, kk = cand.shape
    sims = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    for a in range(0, n, rows_per_chunk):
        c = np.sort(cand[a:a + rows_per_chunk], axis=1)  # by index; -1 (none) first
        m = len(c)
        rows = np.repeat(np.arange(a, a + m, dtype=np.int64), kk).reshape(m, kk)
        valid = c >= 0
        exact = np.full((m, kk), -np.inf, np.float32)
        exact[valid] = pair_inner_products(x, rows[valid], c[valid])  # row-major: already in the product's order
        # a stable sort by decreasing score of index-sorted candidates: ties go to the lower index
        by_score = np.argsort(_descending_key(exact), axis=1, kind="stable")[:, :k]
        sims[a:a + m] = np.take_along_axis(exact, by_score, 1)
        idx[a:a + m] = np.take_along_axis(c, by_score, 1)
    return sims, idx
