"""k-reciprocal Jaccard distance (Zhong et al., CVPR'17 re-ranking) for pseudo labelling.

The definition, as SpCL / Cluster-Contrast / HHCL use it:

* ``N(i, k)``: the first ``k`` entries of i's k-NN list, i itself included (so with
  ``k = k1`` that is i and its k1 - 1 nearest neighbours: those pipelines search
  exactly k1 neighbours and index ``[:k1 + 1]`` into that list);
* ``R(i, k) = {j in N(i, k) : i in N(j, k)}``, the k-reciprocal set;
* ``R*(i) = R(i, k1)`` united with ``R(j, k1 / 2)`` for every candidate ``j`` in
  ``R(i, k1)`` with ``|R(i, k1) & R(j, k1 / 2)| > 2/3 |R(j, k1 / 2)|`` (``k1 / 2`` is
  ``round(k1 / 2)``, Python rounding, and that set is computed with ``round(k1/2) + 1``
  list entries, again as in those pipelines);
* ``V[i, j] = exp(-d(i, j)) / sum_{x in R*(i)} exp(-d(i, x))`` for ``j`` in ``R*(i)``,
  with ``d = 2 - 2 cos`` (the squared Euclidean distance of unit vectors);
* local query expansion ``V[i] <- mean(V[n] for n in N(i, k2))``;
* ``d_J(i, j) = 1 - sum_k min(V[i,k], V[j,k]) / sum_k max(V[i,k], V[j,k])``, which is
  ``1 - m / (2 - m)`` with ``m = sum_k min`` because every row of V sums to 1; negative
  round-off is clipped to 0.

Two implementations share the k-NN graph and the k-reciprocal encoding (the sparse
rows of V), so that their float32 distances are bit-identical and DBSCAN gives the same
labels on both:

* the sparse graph (:func:`expanded_jaccard_graph`) computes only pairs whose V rows overlap (every other
  pair is at distance exactly 1), keeps those within a bound (DBSCAN's eps, or the
  largest eps of a sweep) and never allocates anything N x N;
* :func:`dense_jaccard_matrix` follows the published code: dense N x N V, V after
  query expansion and Jaccard matrices, filled row by row.  It is the comparison path
  (``CLUSTER.JACCARD=dense``); it needs ~3 N^2 float32 of memory.

Both accumulate ``m`` in float64, in increasing order of the support column ``k``.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from .knn import ArrayLike, KNNGraph, build_knn_graph, prepare_features, progress
from .result import release_free_heap

logger = logging.getLogger(__name__)

KNN = Tuple[np.ndarray, np.ndarray]


def half_k(k1: int) -> int:
    """The ``k1 / 2`` of the expansion step, rounded like the published code (half to even)."""
    return int(round(k1 / 2))


def k_reciprocal_sets(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """``R(i, k)`` for every i as the rows of an N x N 0/1 CSR matrix (int32 data, sorted indices).

    ``rank`` is the (N, K) k-NN list with i in column 0; its first ``k`` columns are used.
    Negative entries (empty slots of an approximate index) are ignored.  ``j`` is kept
    when i appears in ``j``'s own list, tested on the lists of a chunk of rows at a time,
    so that the memory stays O(N k) however large N is.
    """
    n = rank.shape[0]
    k = int(min(k, rank.shape[1]))
    cols = rank[:, :k]
    members = np.full((n, k), n, np.int32 if n < 2**31 - 1 else np.int64)  # n: not a member
    step = max(1, 1_000_000 // (k * k))
    starts = range(0, n, step)
    for a in progress(starts, total=len(starts), desc=f"k-reciprocal sets (k={k})"):
        c = cols[a:a + step]
        valid = c >= 0
        mutual = (cols[np.where(valid, c, 0)] == np.arange(a, a + len(c))[:, None, None]).any(axis=2)
        members[a:a + len(c)] = np.where(valid & mutual, c, n)
    members.sort(axis=1)
    keep = members < n
    keep[:, 1:] &= members[:, 1:] != members[:, :-1]  # an approximate index may list a point twice
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return sp.csr_matrix((np.ones(int(indptr[-1]), np.int32), members[keep], indptr), shape=(n, n))


def expanded_k_reciprocal_sets(rank: np.ndarray, k1: int, rows_per_chunk: int = 8192) -> sp.csr_matrix:
    """``R*(i)`` (0/1 CSR, sorted indices): R(i, k1) expanded by the reciprocal sets of its members.

    Done with sparse products instead of per-point loops: ``(R @ Rh^T)[i, j]`` is
    ``|R(i) & Rh(j)|``, and the union over accepted ``j`` is the pattern of ``A @ Rh``.
    The overlaps are computed for a chunk of rows at a time and only kept where
    ``j`` is in ``R(i)``, so nothing larger than a chunk's overlaps is held.
    """
    n = rank.shape[0]
    kh = min(half_k(k1) + 1, rank.shape[1])
    r_full = k_reciprocal_sets(rank, k1)
    r_half = k_reciprocal_sets(rank, kh)
    half_size = np.diff(r_half.indptr).astype(np.float64)
    r_half_t = r_half.T.tocsr()
    pieces = []
    starts = range(0, n, rows_per_chunk)
    for a in progress(starts, total=len(starts), desc="k-reciprocal expansion"):
        rows = r_full[a:a + rows_per_chunk]
        overlap = (rows @ r_half_t).multiply(rows).tocsr()
        # the same float64 test as the reference code: len(intersection) > 2/3 * len(R(j, k1/2))
        overlap.data = (overlap.data > (2 / 3) * half_size[overlap.indices]).astype(np.int32)
        overlap.eliminate_zeros()
        pieces.append(overlap)
    del r_half_t
    accepted = sp.vstack(pieces, format="csr")
    del pieces
    expansion = accepted @ r_half
    del accepted, r_half
    star = (r_full + expansion).tocsr()
    del r_full, expansion
    star.sum_duplicates()
    star.sort_indices()
    star.data = np.ones_like(star.data, dtype=np.int32)
    return star


def k_reciprocal_weights(graph: KNNGraph, k1: int) -> sp.csr_matrix:
    """The k-reciprocal encoding: the sparse rows of V (before query expansion), N x N float32 CSR.

    Shared by the dense and the sparse Jaccard graph: both must see the very same
    float32 values for their distances (and so their DBSCAN labels) to agree exactly.
    """
    rank = graph.idx
    n = rank.shape[0]
    star = expanded_k_reciprocal_sets(rank, k1)
    counts = np.diff(star.indptr)
    if (counts == 0).any():  # cannot happen: i is always in R(i, k1)
        raise RuntimeError("a point has an empty k-reciprocal set; is the k-NN list missing the point itself?")
    sims = graph.similarities(np.repeat(np.arange(n, dtype=np.int32), counts), star.indices)
    dist = 2.0 - 2.0 * sims.astype(np.float64)  # squared Euclidean distance of unit vectors
    del sims
    starts = star.indptr[:-1]
    dist -= np.repeat(np.minimum.reduceat(dist, starts), counts)  # softmax shift, exact in exp ratios
    w = np.exp(np.negative(dist, out=dist), out=dist)
    w /= np.repeat(np.add.reduceat(w, starts), counts)
    return sp.csr_matrix((w.astype(np.float32), star.indices, star.indptr), shape=(n, n))


def query_expansion_matrix(rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """0/1 N x N CSR whose row i lists ``N(i, k2)`` in k-NN order (unsorted on purpose).

    ``(Q @ V)`` then sums the k2 rows of V in that order, the same order in which the
    dense implementation adds them, so both give bit-identical float64 sums.
    """
    n = rank.shape[0]
    k2 = int(max(1, min(k2, rank.shape[1])))
    cols = rank[:, :k2].copy()
    bad = cols < 0
    if bad.any():
        cols[bad] = np.broadcast_to(np.arange(n)[:, None], cols.shape)[bad]
    indptr = np.arange(0, n * k2 + 1, k2, dtype=np.int64)
    return sp.csr_matrix((np.ones(n * k2, np.float64), cols.ravel(), indptr), shape=(n, n))


def expanded_weights(v: sp.csr_matrix, rank: np.ndarray, k2: int, rows_per_chunk: int = 16384) -> sp.csr_matrix:
    """V after local query expansion (float32 CSR, sorted indices)."""
    k2 = int(max(1, min(k2, rank.shape[1])))
    if k2 == 1:
        return v
    n = rank.shape[0]
    q = query_expansion_matrix(rank, k2)
    v64 = v.astype(np.float64)
    data, indices, counts = [], [], [np.zeros(1, np.int64)]
    starts = range(0, n, rows_per_chunk)
    for a in progress(starts, total=len(starts), desc="query expansion"):  # only one chunk is ever float64
        part = (q[a:a + rows_per_chunk] @ v64).tocsr()
        part.data /= k2
        part = sp.csr_matrix((part.data.astype(np.float32), part.indices, part.indptr), shape=part.shape)
        part.sort_indices()
        data.append(part.data)
        indices.append(part.indices)
        counts.append(np.diff(part.indptr))
    del v64, q
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.cumsum(np.concatenate(counts))),
                         shape=(n, v.shape[1]))


@dataclass
class JaccardGraph:
    """The Jaccard stage's result: every pair within ``bound``, and each point's nearest other distance.

    ``dist`` (N x N float32 CSR, symmetric, sorted indices) stores exactly the pairs with
    Jaccard distance ``<= bound``, the diagonal's zeros included; DBSCAN with any
    ``eps <= bound`` needs nothing else, so an eps sweep computes the distances once
    with the largest eps as the bound.  ``nearest`` is exact even where it exceeds the
    bound (1.0 where a point shares no support with any other).
    """

    dist: sp.csr_matrix
    nearest: np.ndarray  # float32 (N,)
    bound: float
    seconds: Dict[str, float] = field(default_factory=dict)


JACCARD_METHODS = ("sparse", "dense")


def knn_jaccard_graph(
    knn: KNNGraph,
    k1: int,
    k2: int,
    bound: float,
    *,
    method: str = "sparse",
    max_pairs_per_chunk: int = 250_000,
    workers: Optional[int] = None,
) -> JaccardGraph:
    """k-NN graph -> k-reciprocal encoding -> query expansion -> Jaccard graph within ``bound``.

    The one composition of the stages: training (``dbscan_jaccard``), ``hhcl-cluster``
    and the one-call helpers below all run it.  ``method``: ``sparse`` never builds
    anything N x N; ``dense`` is the published implementation (:func:`dense_jaccard_graph`),
    kept to compare against; both give identical distances.  Each stage's inputs are
    dropped as soon as the next stage has what it needs, and their freed pages go back
    to the system, so the peak stays near the largest stage's.  ``seconds`` holds
    ``jaccard`` and each stage's share (``jaccard_k_reciprocal``, ...).
    """
    if method not in JACCARD_METHODS:
        raise ValueError(f"unknown Jaccard method '{method}', expected one of {', '.join(JACCARD_METHODS)}")
    start = time.perf_counter()
    weights = k_reciprocal_weights(knn, k1)
    rank = knn.idx
    release_free_heap()
    t_weights = time.perf_counter()
    if method == "sparse":
        vq = expanded_weights(weights, rank, k2)
        del weights, rank  # not needed again: ~40 MB per 100,000 images
        release_free_heap()
        t_expanded = time.perf_counter()
        graph = expanded_jaccard_graph(vq, bound, max_pairs_per_chunk=max_pairs_per_chunk, workers=workers)
        del vq
        graph.seconds["query_expansion"] = t_expanded - t_weights
    else:
        graph = dense_jaccard_graph(weights, rank, k2, bound)
        del weights, rank
    release_free_heap()
    graph.seconds = {"jaccard": time.perf_counter() - start, "jaccard_k_reciprocal": t_weights - start,
                     **{f"jaccard_{k}": v for k, v in graph.seconds.items()}}
    return graph


def expanded_jaccard_graph(
    vq: sp.csr_matrix,
    bound: float,
    *,
    max_pairs_per_chunk: int = 250_000,
    workers: Optional[int] = None,
) -> JaccardGraph:
    """The Jaccard graph within ``bound`` of V after query expansion (:func:`expanded_weights`).

    A stage of its own so that a caller can drop V and the k-NN lists before it.
    ``m[i, j] = sum_k min(V[i,k], V[j,k])`` is accumulated column by column of the
    support: for each stored ``(i, k)``, the column ``k`` of V lists the ``j`` to
    update.  Rows are processed in chunks of at most ``max_pairs_per_chunk`` such
    updates, and each chunk's updates are summed by a sparse product ``E @ P`` (E:
    updates of a row, P: one-hot target column of an update), which adds them in C, in
    emission order, without sorting.  Memory is O(N * k1 * k2) for V plus O(chunk) per
    worker thread for the updates.
    """
    n = vq.shape[0]
    seconds: Dict[str, float] = {}
    t = time.perf_counter()
    logger.debug("Jaccard: V has %.1f non-zeros per row after query expansion", vq.nnz / n)

    col = vq.tocsc()
    col.sort_indices()
    col_nnz = np.diff(col.indptr).astype(np.int64)
    # number of (i, k, j) updates emitted by each row i
    row_updates = np.zeros(n, np.int64)
    nonempty = np.diff(vq.indptr) > 0
    if vq.nnz:
        row_updates[nonempty] = np.add.reduceat(col_nnz[vq.indices], vq.indptr[:-1][nonempty])
    bounds = _chunk_bounds(row_updates, max_pairs_per_chunk)
    logger.debug("Jaccard: %d min-updates in %d chunks", int(row_updates.sum()), len(bounds) - 1)

    out_indptr = [np.zeros(1, np.int64)]
    out_indices, out_data, nearest = [], [], []
    nnz_so_far = 0
    chunks = list(zip(bounds[:-1], bounds[1:]))
    # NumPy and SciPy release the GIL in the heavy calls: threads give ~1.9x on 2 cores
    with ThreadPoolExecutor(max(1, min(workers or torch.get_num_threads(), len(chunks)))) as pool:
        pieces = pool.map(lambda ab: _jaccard_rows(vq, col, col_nnz, row_updates, bound, *ab), chunks)
        for indptr, indices, data, near in progress(pieces, total=len(chunks), desc="Jaccard"):
            # copied here: a worker's heap then holds only its chunk's temporaries, which it
            # reuses, instead of results pinned between them
            out_indptr.append(indptr[1:] + nnz_so_far)
            out_indices.append(indices.copy())
            out_data.append(data.copy())
            nearest.append(near.copy())
            nnz_so_far += len(indices)
    col = None  # freed before the pieces are joined
    dist = sp.csr_matrix(
        (np.concatenate(out_data) if out_data else np.zeros(0, np.float32),
         np.concatenate(out_indices) if out_indices else np.zeros(0, np.int32),
         np.concatenate(out_indptr)),
        shape=(n, n),
    )
    dist.sort_indices()
    _tick(seconds, "min_sum", t)
    logger.debug("Jaccard: %.1f stored pairs per row within %.3f", dist.nnz / n, bound)
    return JaccardGraph(dist, np.concatenate(nearest) if nearest else np.ones(0, np.float32), float(bound), seconds)


def _tick(seconds: Dict[str, float], key: str, start: float) -> float:
    now = time.perf_counter()
    seconds[key] = seconds.get(key, 0.0) + now - start
    return now


def _chunk_bounds(weights: np.ndarray, budget: int) -> np.ndarray:
    """Row boundaries so that each chunk's summed weight stays near ``budget`` (>= 1 row each)."""
    n = len(weights)
    if n == 0:
        return np.array([0], np.int64)
    cum = np.cumsum(weights, dtype=np.int64)
    bounds = [0]
    while bounds[-1] < n:
        a = bounds[-1]
        base = cum[a - 1] if a > 0 else 0
        b = int(np.searchsorted(cum, base + budget, side="right"))
        bounds.append(max(b, a + 1) if b < n else n)
    return np.asarray(bounds, np.int64)


def _jaccard_rows(
    vq: sp.csr_matrix, col: sp.csc_matrix, col_nnz: np.ndarray, row_updates: np.ndarray, bound: float,
    a: int, b: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR pieces (int64 indptr, indices, float32 data) of the Jaccard rows ``a:b`` within ``bound``,
    and those rows' nearest other distance."""
    n = vq.shape[0]
    lo, hi = vq.indptr[a], vq.indptr[b]
    ks = vq.indices[lo:hi]
    vi = vq.data[lo:hi]
    reps = col_nnz[ks]
    total = int(reps.sum())
    idx_dtype = np.int64 if max(total, col.nnz) >= 2**31 - 1 else np.int32
    # position of each update inside col.indices: col.indptr[k] + 0..reps-1
    entry = np.repeat(np.arange(hi - lo, dtype=idx_dtype), reps)
    first = np.cumsum(reps, dtype=np.int64) - reps
    pos = np.arange(total, dtype=idx_dtype)
    pos -= np.repeat(first.astype(idx_dtype), reps)
    pos += np.repeat(col.indptr[ks].astype(idx_dtype), reps)
    targets = col.indices[pos]
    mins = np.minimum(vi[entry], col.data[pos]).astype(np.float64)
    del entry, pos
    # updates grouped by row (vq is row-major): E[r, t] = mins[t], P[t, targets[t]] = 1
    upd_ptr = np.zeros(b - a + 1, np.int64)
    np.cumsum(row_updates[a:b], out=upd_ptr[1:])
    e = sp.csr_matrix((mins, np.arange(total, dtype=idx_dtype), upd_ptr), shape=(b - a, total))
    p = sp.csr_matrix(
        (np.ones(total, np.float64), targets, np.arange(total + 1, dtype=idx_dtype)), shape=(total, n)
    )
    m = (e @ p).tocsr()
    del e, p, mins, targets
    d = 1.0 - m.data / (2.0 - m.data)
    np.maximum(d, 0.0, out=d)
    d = d.astype(np.float32)
    rows = np.repeat(np.arange(b - a), np.diff(m.indptr))
    nearest = _row_minimum(np.where(m.indices != a + rows, d, np.float32(1.0)), m.indptr)
    keep = d <= bound  # in float32, as DBSCAN compares
    indptr = np.zeros(b - a + 1, np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=b - a), out=indptr[1:])
    return indptr, m.indices[keep], d[keep], nearest


def _row_minimum(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Minimum of each CSR row's values, capped at 1.0 (1.0 for an empty row)."""
    out = np.ones(len(indptr) - 1, np.float32)
    nonempty = np.diff(indptr) > 0
    if nonempty.any():
        out[nonempty] = np.minimum(np.minimum.reduceat(values, indptr[:-1][nonempty]), 1.0)
    return out


def dense_jaccard_matrix(weights: sp.csr_matrix, rank: np.ndarray, k2: int) -> np.ndarray:
    """k-reciprocal Jaccard distances as a dense N x N float32 matrix (the published approach).

    Kept as the comparison path: same algorithm and memory profile as the SpCL /
    Cluster-Contrast / HHCL code (dense V, dense expanded V, an inverted index per
    column, one row of the Jaccard matrix at a time), so benchmarks compare against
    what those pipelines do.  Its values equal the sparse implementation's bit for bit.
    """
    n = weights.shape[0]
    v = np.zeros((n, n), np.float32)
    for a in range(0, n, 4096):  # scatter the sparse rows without an N*nnz temporary
        blk = weights[a:a + 4096].tocoo()
        v[blk.row + a, blk.col] = blk.data

    k2 = int(max(1, min(k2, rank.shape[1])))
    if k2 != 1:
        q_rank = rank[:, :k2].copy()
        bad = q_rank < 0
        q_rank[bad] = np.broadcast_to(np.arange(n)[:, None], q_rank.shape)[bad]
        v_qe = np.zeros_like(v)
        acc = np.empty(n, np.float64)
        for i in progress(range(n), total=n, desc="query expansion"):
            nbrs = q_rank[i]
            acc[:] = v[nbrs[0]]
            for j in nbrs[1:]:
                acc += v[j]
            acc /= k2
            v_qe[i] = acc
        v = v_qe
        del v_qe

    # inverted index: for every column k, the rows with V[:, k] != 0 (ascending)
    nz_rows, nz_cols = [], []
    for a in range(0, n, 2048):
        r, c = np.nonzero(v[a:a + 2048])
        nz_rows.append(r + a)
        nz_cols.append(c)
    nz_rows = np.concatenate(nz_rows)
    nz_cols = np.concatenate(nz_cols)
    order = np.argsort(nz_cols, kind="stable")
    inv_rows = nz_rows[order]
    inv_ptr = np.concatenate([[0], np.cumsum(np.bincount(nz_cols, minlength=n))])
    del nz_rows, nz_cols, order

    jaccard = np.empty((n, n), np.float32)
    temp_min = np.zeros(n, np.float64)
    for i in progress(range(n), total=n, desc="Jaccard (dense)"):
        support = np.flatnonzero(v[i])
        spans = [inv_rows[inv_ptr[k]:inv_ptr[k + 1]] for k in support]
        rows_all = np.concatenate(spans)
        cols_all = np.repeat(support, [len(s) for s in spans])
        mins = np.minimum(v[i, cols_all], v[rows_all, cols_all]).astype(np.float64)
        temp_min[:] = 0.0
        np.add.at(temp_min, rows_all, mins)  # in order: k ascending for every target row
        row = 1.0 - temp_min / (2.0 - temp_min)
        np.maximum(row, 0.0, out=row)
        jaccard[i] = row
    return jaccard


def dense_jaccard_graph(weights: sp.csr_matrix, rank: np.ndarray, k2: int, bound: float) -> JaccardGraph:
    """:func:`dense_jaccard_matrix` cut to the pairs within ``bound``, for the ``CLUSTER.JACCARD dense`` path."""
    seconds: Dict[str, float] = {}
    t = time.perf_counter()
    dist = dense_jaccard_matrix(weights, rank, k2)
    t = _tick(seconds, "min_sum", t)
    n = dist.shape[0]
    nearest = np.ones(n, np.float32)
    rows, cols, vals = [], [], []
    for a in range(0, n, 2048):
        blk = dist[a:a + 2048]
        r, c = np.nonzero(blk <= bound)
        rows.append(r + a)
        cols.append(c)
        vals.append(blk[r, c])
        r = np.arange(blk.shape[0])
        diag = blk[r, a + r].copy()
        blk[r, a + r] = np.inf
        nearest[a:a + 2048] = np.minimum(blk.min(axis=1), 1.0)
        blk[r, a + r] = diag
    del dist
    graph = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    graph.sort_indices()
    _tick(seconds, "cut", t)
    return JaccardGraph(graph, nearest, float(bound), seconds)


def knn_graph_for(features: ArrayLike, k1: int, k2: int, knn: Optional[KNN] = None,
                  knn_index: str = "exact") -> KNNGraph:
    """The k-NN graph for the one-call helpers below: searched, or from given ``(sims, idx)`` lists."""
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if knn is None:
        return build_knn_graph(features, k1, index=knn_index)
    sims, rank = knn
    x = prepare_features(features)
    if rank.shape[1] < min(k1, x.shape[0]):
        raise ValueError(f"the given k-NN lists have {rank.shape[1]} columns, k1={k1} needs {k1}")
    return KNNGraph(x, np.asarray(sims, np.float32)[:, :k1], np.asarray(rank, np.int64)[:, :k1])


def compute_jaccard_distance_sparse(features: ArrayLike, k1: int = 30, k2: int = 6, *, knn: Optional[KNN] = None,
                                    knn_index: str = "exact", bound: float = 1.0, **options: Any) -> sp.csr_matrix:
    """All stages up to the sparse Jaccard matrix in one call (pairs within ``bound``; absent pairs at 1).

    ``knn``: optional precomputed ``(sims, idx)`` with >= k1 columns; ``options`` go to
    :func:`knn_jaccard_graph`.
    """
    return knn_jaccard_graph(knn_graph_for(features, k1, k2, knn, knn_index), k1, k2, bound, **options).dist


def compute_jaccard_distance_dense(features: ArrayLike, k1: int = 30, k2: int = 6, *, knn: Optional[KNN] = None,
                                   knn_index: str = "exact") -> np.ndarray:
    """All stages up to the dense N x N Jaccard matrix in one call (see :func:`dense_jaccard_matrix`)."""
    graph = knn_graph_for(features, k1, k2, knn, knn_index)
    return dense_jaccard_matrix(k_reciprocal_weights(graph, k1), graph.idx, k2)
