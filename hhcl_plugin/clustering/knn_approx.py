"""Approximate k-NN for large N: an inverted file searched with blocked matrix products.

The exact search costs N^2 D; at a million 2048-d features that is hours on a CPU.
Here the features are split into ``L = N / 64`` cells (the nearest of ``L`` coarse
spherical k-means centroids), each point searches the ``nprobe`` cells whose centroids
are nearest to it, and so meets ~``64 nprobe`` others instead of N.  The cost is the
assignment to the centroids, ``2 N L D = N^2 D / 32`` flops, 32x less than the exact
search's ``N^2 D`` (its symmetric half), plus a search that grows only as N.

Cells must be finer than the groups of look-alike identities, or the probed cells miss
a point's neighbours; that is why they are small.  Cell by cell, the points of a cell
and every point that probes it form two dense matrices, so the search runs as matrix
products at the BLAS's speed (a per-query index scan, as in faiss IVF, ran ~50x
slower per pair here).  Where the CPU multiplies bfloat16 in hardware the candidates
(``k + spare`` per row) are picked in bfloat16; then every listed neighbour is
re-scored exactly as the exact search scores it
(:func:`~hhcl_plugin.clustering.knn.pair_inner_products`) and the lists are ordered by
score, then index.  So a neighbour found here has the very float32 score the exact
search gives it, and the lists differ from the exact ones only where a true neighbour
lies in a cell that was not probed.

Where it loses: points far from every centroid (a re-ID set's junk images: random
directions) have neighbours scattered over all cells, so their lists are mostly
approximate; they are outliers for DBSCAN either way.  ``docs/clustering.md`` has the
recall and the labels' ARI against the exact search.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..utils.progress import progress
from .knn import cpu_has_bf16_matmul, order_by_row_score_index, pair_inner_products

logger = logging.getLogger(__name__)

# CLUSTER.KNN_INDEX auto searches exactly below this many features and approximately
# from it on.  At 20,000 the approximate search was no faster and its labels differed
# (ARI 0.95 against the exact search's, docs/clustering.md); the exact search grows as
# N^2 D, ~70 s at 100,000 on a 2-core AVX512-BF16 CPU, so ~7-8 minutes here
AUTO_CROSSOVER = 250_000
DEFAULT_NPROBE = 32
DEFAULT_SPARE = 8
# points per cell: cells must be finer than the groups of similar identities for the
# probed cells to hold a point's neighbours (recall 0.996 of clustered rows at 64 and
# 8 probes, 0.97 at 256 on the synthetic benchmark features; 32 probes: 0.999)
DEFAULT_CELL_SIZE = 64


def resolve_knn_index(index: str, n: int, crossover: int = AUTO_CROSSOVER, on_gpu: bool = False) -> str:
    """``exact`` or ``ivf`` for ``n`` features: ``auto`` picks by the crossover (exact on a GPU, where
    the exact search of a million features takes seconds)."""
    if index != "auto":
        return index
    return "exact" if on_gpu or n < crossover else "ivf"


def approximate_knn(
    x: torch.Tensor,
    k: int,
    *,
    nprobe: int = DEFAULT_NPROBE,
    cells: Optional[int] = None,
    cell_size: int = DEFAULT_CELL_SIZE,
    spare: int = DEFAULT_SPARE,
    low_precision: Optional[bool] = None,
    seed: int = 0,
    partitions: int = 1,
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(sims, idx)`` (float32 / int64, (N, k)) of checked unit features ``x``, or None where N is too small.

    Args:
        nprobe: cells searched per cell of queries (its own included).
        cells: number of cells ``L``; default ``N / cell_size``.
        spare: candidates kept per row beyond ``k`` for the exact re-scoring.
        low_precision: pick candidates with bfloat16 products (default: where the CPU
            has bfloat16 units); False: float32 products.
        seed: the centroid sample.
        partitions: independent cell splits searched (their candidates united).

    Returns None when fewer than two cells would be used (the caller then searches
    exactly).  Rows are ordered by exact score, then index; a row whose probed cells
    hold fewer than ``k`` points ends with ``-1`` slots.
    """
    n = x.shape[0]
    nprobe = int(max(1, nprobe))
    n_cells = int(cells if cells is not None else n // max(1, cell_size))
    if n_cells < 2 or n_cells * 2 > n:
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
        found = []
        for part in range(max(1, partitions)):  # independent cell splits: a pair missed by one is found by another
            centroids = _train_centroids(x_lp, n_cells, seed + part)
            probes = _probed_cells(x_lp, centroids, nprobe)
            del centroids
            found.append(_cell_candidates(x_lp, probes, kk))
            del probes
        del x_lp
        cand = np.concatenate(found, axis=1) if len(found) > 1 else found[0]
        del found
    return _rescored_top_k(x, cand, min(k, n))


def _train_centroids(x: torch.Tensor, n_cells: int, seed: int, per_cell: int = 4, iters: int = 2) -> torch.Tensor:
    """Spherical k-means centroids (unit rows, ``x``'s dtype) from a seeded sample of ``per_cell`` points per cell.

    Coarse on purpose: the cells only decide which pairs are compared, and at a million
    points each k-means iteration costs as much as assigning every point.
    """
    n = x.shape[0]
    dtype = x.dtype
    rng = np.random.default_rng(seed)
    sample = x[torch.from_numpy(np.sort(rng.choice(n, min(n, per_cell * n_cells), replace=False))).to(x.device)]
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
    probes = np.empty((n, nprobe), np.int32)  # int32: 128 MB less at a million points and 32 probes
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
    askers = _group_by(probes.ravel(), n_cells, values=np.repeat(np.arange(n, dtype=np.int32), probes.shape[1]))
    # the running lists in NumPy, merged by argpartition (unordered: the re-scoring orders
    # them): on small blocks NumPy's single-threaded calls beat torch's, which wait on its threads
    best_v = np.full((n, kk), -np.inf, np.float32)
    best_i = np.full((n, kk), -1, np.int64)
    take_rows = _row_gather(x)
    for cell in progress(range(n_cells), total=n_cells, desc="k-NN approximate"):
        pool = members[cell]
        if len(pool) == 0:
            continue
        pool_x = take_rows(pool)
        for a in range(0, len(askers[cell]), query_block):
            rows = askers[cell][a:a + query_block]
            scores = _float32_numpy(take_rows(rows) @ pool_x.T)
            merged_v = np.concatenate([best_v[rows], scores], axis=1)
            keep = np.argpartition(merged_v, merged_v.shape[1] - kk, axis=1)[:, -kk:]
            best_v[rows] = np.take_along_axis(merged_v, keep, 1)
            best_i[rows] = np.take_along_axis(
                np.concatenate([best_i[rows], np.broadcast_to(pool, scores.shape)], axis=1), keep, 1)
    return best_i


def _float32_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 NumPy copy of a float32 or bfloat16 tensor (bfloat16: its bits shifted into float32's)."""
    t = t.cpu()
    if t.dtype == torch.float32:
        return t.numpy()
    return (t.view(torch.int16).numpy().astype(np.int32) << 16).view(np.float32)


def _row_gather(x: torch.Tensor) -> Callable[[np.ndarray], torch.Tensor]:
    """``rows -> x[rows]``; on CPU through NumPy's ``take``, ~10x faster than torch's indexing here."""
    if x.is_cuda:
        return lambda rows: torch.index_select(x, 0, torch.from_numpy(rows).to(x.device))
    bits = torch.int16 if x.element_size() == 2 else torch.int32  # NumPy has no bfloat16: move the bits
    flat = x.view(bits).numpy()
    return lambda rows: torch.from_numpy(np.take(flat, rows, axis=0)).view(x.dtype)


def _group_by(keys: np.ndarray, n_groups: int, values: Optional[np.ndarray] = None) -> list:
    """``values`` (default: the positions) split by ``keys``, ascending within each group."""
    order = np.argsort(keys, kind="stable")
    values = order if values is None else values[order]
    bounds = np.zeros(n_groups + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n_groups), out=bounds[1:])
    return [values[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def _rescored_top_k(x: torch.Tensor, cand: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each row's candidates by exact score (decreasing), then index (increasing).

    A pair found from either end counts for both (j is a candidate of i when i listed j,
    and the other way round): a cell that one of them did not probe no longer hides
    the pair, and the k-reciprocal test needs exactly those mutual pairs.
    """
    n, kk = cand.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), kk)
    cols = cand.ravel()
    valid = cols >= 0
    rows, cols = rows[valid], cols[valid]
    keys = np.unique(np.concatenate([rows * n + cols, cols * n + rows]))  # sorted: row-major, no pair twice
    del rows, cols, valid
    rows, cols = np.divmod(keys, n)
    del keys
    exact = pair_inner_products(x, rows, cols)  # row-major: already in the product's order
    order = order_by_row_score_index(rows, exact, cols)  # the one tie rule of every k-NN list
    counts = np.bincount(rows, minlength=n)
    first = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    sims = np.full((n, k), -np.inf, np.float32)
    idx = np.full((n, k), -1, np.int64)
    slot = np.arange(len(order)) - np.repeat(first, counts)  # rank of each pair within its row
    keep = slot < k
    sims[rows[order[keep]], slot[keep]] = exact[order[keep]]
    idx[rows[order[keep]], slot[keep]] = cols[order[keep]]
    return sims, idx
