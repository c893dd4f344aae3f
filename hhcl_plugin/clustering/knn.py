"""k-nearest-neighbour search on L2-normalised features (inner product == cosine).

Every epoch of HHCL re-clusters the whole training set, and the k-NN search over
N x D features is the one stage whose cost grows as N^2 * D; the rest of the
clustering only touches the neighbour lists.  So the backend is chosen for speed:

* ``exact`` on CPU: a blocked float32 matmul in torch that computes each pair of
  row blocks once and uses it for both blocks (the similarity matrix is symmetric),
  keeping a running top-k.  On the 2-core machines we measured, it is as fast per
  flop as faiss ``IndexFlatIP`` and does half the flops.
* ``exact`` on a GPU (features a CUDA tensor): faiss ``GpuIndexFlatIP`` when faiss
  sees a GPU, otherwise the same blocked torch code on the tensor's device.
* ``ivf``: faiss ``IndexIVFFlat`` (approximate), for N so large that exact search
  does not fit the time budget.

All backends return the point itself in column 0, because the k-reciprocal
re-ranking treats "i is among its own k nearest neighbours" as given; with exact
duplicates in the data a plain top-k could otherwise rank a twin first or drop i.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import Iterable, Optional, Tuple, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

KNN_INDEX_TYPES = ("exact", "ivf")


def progress(iterable: Iterable, total: Optional[int] = None, desc: str = "") -> Iterable:
    """tqdm that stays silent when stderr is not a terminal (log files, CI, benchmarks)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None if sys.stderr.isatty() else True)


def faiss_num_gpus() -> int:
    """Number of GPUs faiss can use (0 when faiss is missing or built without GPU support)."""
    try:
        import faiss
    except ImportError:
        return 0
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:
        return 0


def as_float32_tensor(features: ArrayLike) -> torch.Tensor:
    """A contiguous float32 torch view of ``features`` on its own device (no copy when possible)."""
    if isinstance(features, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    elif isinstance(features, torch.Tensor):
        t = features.detach()
        if t.dtype != torch.float32:
            t = t.float()
        t = t.contiguous()
    else:
        raise TypeError(f"features must be a numpy array or a torch tensor, got {type(features).__name__}")
    if t.dim() != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    return t


def knn_search(
    features: ArrayLike,
    k: int,
    *,
    index: str = "exact",
    block_size: int = 2048,
    nlist: Optional[int] = None,
    nprobe: Optional[int] = None,
    query_chunk: int = 16384,
) -> Tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row among all rows, by inner product.

    Args:
        features: (N, D) L2-normalised features, numpy or torch (CPU or CUDA).
        k: neighbours per point, the point itself included; clipped to N.
        index: ``"exact"`` or ``"ivf"`` (approximate, faiss IVF-Flat).
        block_size: rows per matmul block of the exact torch search.
        nlist, nprobe: IVF parameters; default ``nlist ~ 4 sqrt(N)``, ``nprobe ~ nlist / 16``.
        query_chunk: queries per faiss search call.

    Returns:
        ``(sims, idx)``: float32 (N, k) cosine similarities and int64 (N, k) indices.
        Column 0 is the point itself; the other columns are in decreasing similarity.
    """
    if index not in KNN_INDEX_TYPES:
        raise ValueError(f"unknown k-NN index '{index}', expected one of {', '.join(KNN_INDEX_TYPES)}")
    x = as_float32_tensor(features)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64)
    k = int(max(1, min(k, n)))
    on_cuda = x.is_cuda
    use_faiss_gpu = on_cuda and faiss_num_gpus() > 0
    if index == "ivf":
        sims, idx = _faiss_ivf(x, k, nlist=nlist, nprobe=nprobe, use_gpu=use_faiss_gpu, query_chunk=query_chunk)
    elif use_faiss_gpu:
        sims, idx = _faiss_flat_gpu(x, k, query_chunk=query_chunk)
    else:
        sims, idx = _torch_blocked_topk(x, k, block_size=block_size)
    return _put_self_first(x, sims, idx)


def _torch_blocked_topk(x: torch.Tensor, k: int, block_size: int = 2048) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, computing each block pair (I, J), J >= I, once.

    ``S_IJ = X_I X_J^T`` updates the running top-k of the rows of I, and its transpose
    updates those of J, which halves the N^2 D flops of a plain chunked search.
    """
    n = x.shape[0]
    device = x.device
    bs = int(max(1, min(block_size, n)))
    starts = list(range(0, n, bs))
    best_v = torch.full((n, k), -math.inf, dtype=torch.float32, device=device)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=device)

    def merge(rows: slice, vals: torch.Tensor, cols: torch.Tensor) -> None:
        v = torch.cat([best_v[rows], vals], dim=1)
        i = torch.cat([best_i[rows], cols], dim=1)
        top_v, pos = torch.topk(v, k, dim=1)
        best_v[rows] = top_v
        best_i[rows] = torch.gather(i, 1, pos)

    pairs = [(a, b) for ai, a in enumerate(starts) for b in starts[ai:]]
    with torch.no_grad():
        for a, b in progress(pairs, total=len(pairs), desc="k-NN blocks"):
            rows_a, rows_b = slice(a, min(a + bs, n)), slice(b, min(b + bs, n))
            sim = x[rows_a] @ x[rows_b].T
            kk = min(k, sim.shape[1])
            v, i = torch.topk(sim, kk, dim=1)
            merge(rows_a, v, i + b)
            if b != a:
                sim_t = sim.T.contiguous()
                kk = min(k, sim_t.shape[1])
                v, i = torch.topk(sim_t, kk, dim=1)
                merge(rows_b, v, i + a)
    return best_v.cpu().numpy(), best_i.cpu().numpy()


def _faiss_flat_gpu(x: torch.Tensor, k: int, query_chunk: int) -> Tuple[np.ndarray, np.ndarray]:
    import faiss

    xn = x.cpu().numpy()
    res = faiss.StandardGpuResources()
    cfg = faiss.GpuIndexFlatConfig()
    cfg.device = x.device.index or 0
    index = faiss.GpuIndexFlatIP(res, xn.shape[1], cfg)
    index.add(xn)
    return _faiss_search_chunked(index, xn, k, query_chunk)


def _faiss_ivf(
    x: torch.Tensor, k: int, nlist: Optional[int], nprobe: Optional[int], use_gpu: bool, query_chunk: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Approximate search: faiss IVF-Flat, inner product metric.

    Small N gains nothing from IVF, and k-means needs ~39 points per list, so nlist is
    capped by N / 39; below 2 lists the exact index is used instead.
    """
    import faiss

    xn = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    n, d = xn.shape
    if nlist is None:
        nlist = int(round(4 * math.sqrt(n)))
    nlist = int(max(1, min(nlist, n // 39)))
    if nlist < 2:
        logger.info("k-NN: N=%d is too small for IVF, using the exact index", n)
        index = faiss.IndexFlatIP(d)
        index.add(xn)
        return _faiss_search_chunked(index, xn, k, query_chunk)
    if nprobe is None:
        nprobe = max(8, nlist // 16)
    nprobe = int(max(1, min(nprobe, nlist)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, 256 * nlist)
    train = xn if n_train == n else xn[np.random.default_rng(0).choice(n, n_train, replace=False)]
    if use_gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, x.device.index or 0, index)
    logger.info("k-NN: training IVF-Flat, nlist=%d nprobe=%d on %d points", nlist, nprobe, len(train))
    index.train(train)
    index.add(xn)
    index.nprobe = nprobe
    return _faiss_search_chunked(index, xn, k, query_chunk)


def _faiss_search_chunked(index, xn: np.ndarray, k: int, query_chunk: int) -> Tuple[np.ndarray, np.ndarray]:
    n = xn.shape[0]
    sims = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    starts = range(0, n, query_chunk)
    for a in progress(starts, total=len(starts), desc="k-NN search"):
        s, i = index.search(xn[a:a + query_chunk], k)
        sims[a:a + query_chunk] = s
        idx[a:a + query_chunk] = i
    return sims, idx


def _put_self_first(x: torch.Tensor, sims: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Move each point to column 0 of its own list (inserting it if the search dropped it).

    The order of the other neighbours is kept; a missing self pushes out the last one.
    Approximate indexes may also return -1 for unfilled slots: those sort last.
    """
    n, k = idx.shape
    self_idx = np.arange(n, dtype=np.int64)[:, None]
    is_self = idx == self_idx
    self_sim = np.where(is_self.any(1), np.where(is_self, sims, -np.inf).max(1), np.nan).astype(np.float32)
    missing = np.isnan(self_sim)
    if missing.any():
        xm = x[torch.from_numpy(np.flatnonzero(missing)).to(x.device)]
        self_sim[missing] = (xm * xm).sum(1).cpu().numpy()
    ext_idx = np.concatenate([self_idx, idx], axis=1)
    ext_sim = np.concatenate([self_sim[:, None], sims], axis=1)
    drop = np.concatenate([np.zeros((n, 1), bool), is_self | (idx < 0)], axis=1)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    out_idx = np.take_along_axis(ext_idx, order, axis=1)
    out_sim = np.take_along_axis(ext_sim, order, axis=1)
    # slots an approximate index left empty stay empty (-1), after the real neighbours
    empty = np.take_along_axis(drop, order, axis=1)
    out_idx[empty] = -1
    out_sim[empty] = -np.inf
    return np.ascontiguousarray(out_sim, dtype=np.float32), np.ascontiguousarray(out_idx, dtype=np.int64)
