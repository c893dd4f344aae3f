"""k-nearest-neighbour search on L2-normalised features (inner product == cosine).

Every epoch of HHCL re-clusters the whole training set, and the k-NN search over
N x D features is the one stage whose cost grows as N^2 * D; the rest of the
clustering only touches the neighbour lists.  So the backend is chosen for speed:

* ``exact`` on CPU: a blocked matmul that computes each pair of row blocks once and
  uses it for both blocks (the similarity matrix is symmetric).  Where the CPU
  has bfloat16 matrix units (AMX / AVX512-BF16; bfloat16 products ~4x faster than
  float32 on such a CPU), the blocks are *screened* in that precision with a rigorous error bound
  and only the surviving pairs are re-scored in float32, so the result is still the
  float32 top-k (see :func:`_screened_topk`).  Elsewhere, plain float32 blocks.
* ``exact`` on a GPU (features a CUDA tensor): faiss ``GpuIndexFlatIP`` when faiss
  sees a GPU, otherwise the float32 blocked torch code on the tensor's device.
* ``ivf``: an approximate inverted-file search whose neighbours are re-scored
  exactly (:mod:`.knn_approx`), for N so large that exact search does not fit the
  time budget; ``auto`` takes the exact search below the measured crossover.

All backends return the point itself in column 0, because the k-reciprocal
re-ranking treats "i is among its own k nearest neighbours" as given; with exact
duplicates in the data a plain top-k could otherwise rank a twin first or drop i.

One scoring, one order: whatever a path multiplies to find its candidates, the
similarity of every listed neighbour is computed by :func:`pair_inner_products` and
the lists are ordered by :func:`order_by_row_score_index` (score descending, then
index ascending).  The exact paths keep every candidate that the products' rounding
error bound (:func:`float32_score_error`) cannot rule out, so on one machine every
exact path gives the same lists, whatever CPU flags, threads or shards chose it.
:func:`rescore_top_k` applies both to any candidate lists (an approximate search's too).
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..utils.errors import ClusteringError, ConfigError
from ..utils.progress import progress

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

KNN_INDEX_TYPES = ("exact", "ivf", "auto")

# The switch of the bfloat16 screen: "auto" (by the CPU's flags), "off" (plain float32
# blocks, as on a CPU without bfloat16 units) or "emulate" (the screen with bfloat16
# rounding emulated around float32 products, on any CPU; slow, for tests).
BF16_SCREEN_ENV = "HHCL_KNN_BF16"
BF16_SCREEN_MODES = ("auto", "off", "emulate")

# candidates beyond k that the float32 block searches keep per row; rows whose
# candidates may still miss a top-k member are searched again in full
SPARE_CANDIDATES = 16


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


def prepare_features(features: ArrayLike) -> torch.Tensor:
    """float32 (N, D) tensor, finite and L2-normalised: the one check every later stage relies on.

    The k-reciprocal weights assume cosine similarities, and a NaN would silently empty
    the screened k-NN candidate lists, so nothing downstream checks again.
    """
    x = as_float32_tensor(features)
    if x.shape[0] == 0:
        raise ClusteringError("no features to cluster (the training set is empty)")
    norms = x.norm(dim=1)  # NaN or Inf anywhere in a row makes its norm NaN or Inf: no second pass
    if not bool(torch.isfinite(norms).all()):
        raise ClusteringError("features contain NaN or Inf; check the model and the feature extraction")
    if bool(((norms - 1).abs() > 1e-3).any()):
        logger.warning("clustering: features are not L2-normalised (norms %.3f..%.3f); normalising them",
                       float(norms.min()), float(norms.max()))
        x = torch.nn.functional.normalize(x, dim=1)
    return x


@dataclass
class KNNGraph:
    """The first clustering stage's result: checked features and each point's k nearest neighbours.

    ``idx[i, 0] == i``; the other columns are in decreasing cosine similarity ``sims``.
    Later stages take the features from here, so they are converted and checked once.
    """

    features: torch.Tensor  # float32 (N, D), finite, L2-normalised, on the caller's device
    sims: np.ndarray  # float32 (N, k)
    idx: np.ndarray  # int64 (N, k); -1 marks a slot an approximate index left empty

    def similarities(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cosine similarity of the pairs ``(rows[t], cols[t])`` as float32.

        Most pairs asked for are k-NN pairs whose similarity the search already computed:
        each is looked up in its row's list (a chunk of pairs at a time, so the memory
        stays small); only the others are recomputed, so the cost stays O(#missing * D).
        """
        out = np.empty(len(rows), np.float32)
        missing = []
        step = max(1, 1_000_000 // max(1, self.idx.shape[1]))
        for s in range(0, len(rows), step):
            r, c = rows[s:s + step], cols[s:s + step]
            hit = self.idx[r] == np.asarray(c)[:, None]
            pos = hit.argmax(axis=1)  # the first occurrence, where an approximate index listed a point twice
            out[s:s + step] = self.sims[r, pos]
            missing.append(s + np.flatnonzero(~hit[np.arange(len(r)), pos]))
        missing = np.concatenate(missing) if missing else np.zeros(0, np.int64)
        if len(missing):
            out[missing] = pair_inner_products(self.features, rows[missing], cols[missing])
        return out


def build_knn_graph(
    features: ArrayLike,
    k: int,
    *,
    index: str = "exact",
    block_size: int = 2048,
    nprobe: Optional[int] = None,
    query_chunk: int = 16384,
    screen: bool = True,
) -> KNNGraph:
    """k nearest neighbours of every row among all rows, by inner product of the normalised features.

    Args:
        features: (N, D) features, numpy or torch (CPU or CUDA); checked and normalised here.
        k: neighbours per point, the point itself included; clipped to N.
        index: ``"exact"``, ``"ivf"`` (approximate, :mod:`.knn_approx`) or ``"auto"``
            (exact below the measured crossover, ``ivf`` from it on).
        block_size: rows per matmul block of the exact torch search.
        nprobe: cells searched per cell by ``ivf`` (default: :mod:`.knn_approx`'s).
        query_chunk: queries per faiss search call.
        screen: allow the bfloat16-screened exact search on CPU (same result, faster
            where the CPU has bfloat16 matrix units); False forces plain float32 blocks,
            as does the environment variable ``HHCL_KNN_BF16=off`` (:func:`bf16_screen_mode`).
    """
    if index not in KNN_INDEX_TYPES:
        raise ValueError(f"unknown k-NN index '{index}', expected one of {', '.join(KNN_INDEX_TYPES)}")
    x = prepare_features(features)
    k = int(max(1, min(k, x.shape[0])))
    on_cuda = x.is_cuda
    use_faiss_gpu = on_cuda and faiss_num_gpus() > 0
    found = None
    if index != "exact":
        from .knn_approx import approximate_knn, resolve_knn_index
        if resolve_knn_index(index, x.shape[0], on_gpu=on_cuda) == "ivf":
            found = approximate_knn(x, k, low_precision=None if screen else False,
                                    **({} if nprobe is None else {"nprobe": nprobe}))
    if found is None and use_faiss_gpu:
        found = _faiss_flat_gpu(x, k, query_chunk=query_chunk, block_size=block_size)
    if found is None and screen and not on_cuda:
        found = _screened_topk(x, k, block_size=block_size)
    sims, idx = found if found is not None else _torch_blocked_topk(x, k, block_size=block_size)
    return KNNGraph(x, *_put_self_first(x, sims, idx))


def knn_search(features: ArrayLike, k: int, **options: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``(sims, idx)`` of :func:`build_knn_graph`: float32 and int64 (N, k), column 0 the point itself."""
    graph = build_knn_graph(features, k, **options)
    return graph.sims, graph.idx


def knn_rows(x: torch.Tensor, k: int, rows: slice, block_size: int = 2048,
             spare: int = SPARE_CANDIDATES) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of the query ``rows`` of checked features ``x`` among all rows, one shard of a sharded search.

    Blocks of float32 products on ``x``'s device pick ``k + spare`` candidates per row;
    :func:`_exact_top_k` scores and orders them as every exact path does, so a shard's
    lists do not depend on which other rows share its process and equal those of the
    one-process search.
    """
    n = x.shape[0]
    query = x[rows]
    m = query.shape[0]
    kk = min(k + spare, n)
    best_v = torch.full((m, kk), -math.inf, dtype=torch.float32, device=x.device)
    best_i = torch.full((m, kk), -1, dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for a in range(0, m, block_size):
            q = query[a:a + block_size]
            for b in range(0, n, block_size):
                sim = q @ x[b:b + block_size].T
                v = torch.cat([best_v[a:a + block_size], sim], dim=1)
                i = torch.cat([best_i[a:a + block_size],
                               torch.arange(b, b + sim.shape[1], device=x.device).expand_as(sim)], dim=1)
                top_v, pos = torch.topk(v, kk, dim=1)
                best_v[a:a + block_size] = top_v
                best_i[a:a + block_size] = torch.gather(i, 1, pos)
    first = rows.start or 0
    return _exact_top_k(x, np.arange(first, first + m, dtype=np.int64), best_i.cpu().numpy(),
                        best_v.cpu().numpy(), min(k, n), block_size=block_size)


def float32_score_error(x: torch.Tensor) -> float:
    """A bound on ``|float32 score - exact score|`` of any pair of rows of ``x``, however computed.

    A float32 inner product of length D, in any summation order, with or without FMA, is
    within ``gamma_D * sum |a_i b_i| <= gamma_D |a| |b|`` of the exact one (``gamma_D =
    D u / (1 - D u)``, ``u = 2^-24``).  Two computations of one pair (a block product and
    :func:`pair_inner_products`) differ by at most twice this.
    """
    dim = x.shape[1]
    u = 2.0 ** -24
    gamma = dim * u / (1 - dim * u)
    max_norm = float(torch.linalg.vector_norm(x, dim=1).max()) if x.shape[0] else 0.0
    return 1.01 * gamma * max_norm ** 2 + 1e-12


def _exact_top_k(x: torch.Tensor, query: np.ndarray, cand: np.ndarray, approx: np.ndarray, k: int,
                 block_size: int = 2048) -> Tuple[np.ndarray, np.ndarray]:
    """The exact top-k of the ``query`` rows from float32 block candidates, scored and ordered as on every path.

    ``cand`` / ``approx``: each query row's best columns and their block scores, in
    decreasing block score (``k`` or more per row).  A column can be in a row's final
    top-k only if its block score is within ``4 e`` of the row's k-th best block score
    (``e`` = :func:`float32_score_error`: each of the two computations of a pair errs by
    at most ``e``).  So the candidates in that band are re-scored; a row whose last
    candidate is still in the band may have more, and is searched again in full.
    """
    n = x.shape[0]
    band = 4.0 * float32_score_error(x)
    m, width = cand.shape
    kth = approx[:, k - 1] if m else np.zeros(0, np.float32)
    floor = kth.astype(np.float64) - band
    complete = np.full(m, width >= n) | (approx[:, -1] < floor)
    keep = (approx >= floor[:, None]) & complete[:, None]
    local, slot = np.nonzero(keep)
    local_parts, col_parts = [local], [cand[local, slot]]
    again = np.flatnonzero(~complete)
    if len(again):
        logger.debug("k-NN: %d rows with more than %d candidates in the rounding band, searched again in full",
                     len(again), width)
        step = max(1, (1 << 24) // max(1, n))  # ~64 MB of scores at a time
        with torch.no_grad():
            for s in range(0, len(again), step):
                part = again[s:s + step]
                sim = x[torch.from_numpy(query[part]).to(x.device)] @ x.T
                low = torch.topk(sim, k, dim=1).values[:, -1:].double() - band
                r, c = torch.nonzero(sim.double() >= low, as_tuple=True)
                local_parts.append(part[r.cpu().numpy()])
                col_parts.append(c.cpu().numpy())
    local = np.concatenate(local_parts)
    cols = np.concatenate(col_parts).astype(np.int64)
    return _top_k_of_scored_pairs(local, pair_inner_products(x, query[local], cols), cols, m, k)


def rescore_top_k(x: torch.Tensor, query: np.ndarray, cand: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each query row's top-k among its candidate columns, scored and ordered as every k-NN path does.

    ``cand`` (m, c) holds candidate columns of the rows ``query`` (m,); ``-1`` marks an
    empty slot, a column listed twice counts once.  Scores come from
    :func:`pair_inner_products`, the order from :func:`order_by_row_score_index`.  Rows
    with fewer than k candidates end in ``-1`` slots of score ``-inf``.  The result is
    the exact top-k only if the candidates hold it (an approximate search's may not).
    """
    query = np.asarray(query, np.int64)
    cand = np.asarray(cand, np.int64)
    m = len(query)
    local, slot = np.nonzero(cand >= 0)
    cols = cand[local, slot]
    if len(cols):  # a column listed twice in a row: once
        key = local * x.shape[0] + cols
        _, unique = np.unique(key, return_index=True)
        local, cols = local[unique], cols[unique]
    return _top_k_of_scored_pairs(local, pair_inner_products(x, query[local], cols), cols, m, k)


def _top_k_of_scored_pairs(local: np.ndarray, scores: np.ndarray, cols: np.ndarray, m: int,
                           k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(sims, idx)`` (m, k) from scored pairs of local rows ``0..m-1``, by :func:`order_by_row_score_index`."""
    sims = np.full((m, k), -np.inf, np.float32)
    idx = np.full((m, k), -1, np.int64)
    if len(local) == 0:
        return sims, idx
    order = order_by_row_score_index(local, scores, cols)
    counts = np.bincount(local, minlength=m)
    first = np.zeros(m, np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    slot = np.arange(len(order)) - np.repeat(first, counts)
    taken = np.flatnonzero(slot < k)
    rows_of = local[order[taken]]
    sims[rows_of, slot[taken]] = scores[order[taken]]
    idx[rows_of, slot[taken]] = cols[order[taken]]
    return sims, idx


def _torch_blocked_topk(x: torch.Tensor, k: int, block_size: int = 2048,
                        spare: int = SPARE_CANDIDATES) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, computing each block pair (I, J), J >= I, once.

    ``S_IJ = X_I X_J^T`` updates the running top-k of the rows of I, and its transpose
    updates those of J, which halves the N^2 D flops of a plain chunked search.  The
    blocks keep ``k + spare`` candidates per row, which :func:`_exact_top_k` scores and
    orders as every exact path does.
    """
    n = x.shape[0]
    device = x.device
    bs = int(max(1, min(block_size, n)))
    starts = list(range(0, n, bs))
    width = min(k + spare, n)
    best_v = torch.full((n, width), -math.inf, dtype=torch.float32, device=device)
    best_i = torch.full((n, width), -1, dtype=torch.int64, device=device)

    def merge(rows: slice, vals: torch.Tensor, cols: torch.Tensor) -> None:
        v = torch.cat([best_v[rows], vals], dim=1)
        i = torch.cat([best_i[rows], cols], dim=1)
        top_v, pos = torch.topk(v, width, dim=1)
        best_v[rows] = top_v
        best_i[rows] = torch.gather(i, 1, pos)

    pairs = [(a, b) for ai, a in enumerate(starts) for b in starts[ai:]]
    with torch.no_grad():
        for a, b in progress(pairs, total=len(pairs), desc="k-NN blocks"):
            rows_a, rows_b = slice(a, min(a + bs, n)), slice(b, min(b + bs, n))
            sim = x[rows_a] @ x[rows_b].T
            kk = min(width, sim.shape[1])
            v, i = torch.topk(sim, kk, dim=1)
            merge(rows_a, v, i + b)
            if b != a:
                sim_t = sim.T.contiguous()
                kk = min(width, sim_t.shape[1])
                v, i = torch.topk(sim_t, kk, dim=1)
                merge(rows_b, v, i + a)
    return _exact_top_k(x, np.arange(n, dtype=np.int64), best_i.cpu().numpy(), best_v.cpu().numpy(), k,
                        block_size=bs)


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16), Linux only.

    Elsewhere bfloat16 products are emulated and slower than float32, so the screen
    would not pay off.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_screen_mode() -> str:
    """How the exact CPU search uses bfloat16: ``"hardware"``, ``"emulate"`` or ``"off"``.

    The one switch between the k-NN's CPU paths: ``HHCL_KNN_BF16`` = ``auto`` (default:
    the screen where :func:`cpu_has_bf16_matmul`), ``off`` (plain float32 blocks, the path
    of a CPU without bfloat16 units) or ``emulate`` (the screen with bfloat16 emulated, on
    any CPU).  Every path gives the same lists; the switch lets one machine run them all.
    """
    value = os.environ.get(BF16_SCREEN_ENV, "").strip().lower() or "auto"
    if value not in BF16_SCREEN_MODES:
        raise ConfigError(f"environment variable {BF16_SCREEN_ENV}={value!r} is not one of "
                          f"{', '.join(BF16_SCREEN_MODES)}; set one of them or unset it")
    if value == "auto":
        return "hardware" if cpu_has_bf16_matmul() else "off"
    return value


def _screened_topk(
    x: torch.Tensor, k: int, block_size: int = 2048, emulate_bf16: bool = False
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Exact float32 top-k by inner product, at nearly the speed of bfloat16 products.

    Each block pair is multiplied once with bfloat16 operands and output (float32
    accumulation).  With ``d = max_i |x_i - bf16(x_i)|``, ``M = max |x_i|`` and
    ``u = 2^-8`` (bfloat16's unit roundoff), a screened score ``s`` is within
    ``e(s) = 2 (M + d) d + 2 D 2^-24 (M + d)^2 + u |s| / (1 - u)`` of the float32 score
    of the same pair (operand rounding, the accumulation error of both products, the
    output's rounding to bfloat16, bounded by the output itself).  For each row the k-th
    best screened score ``s_k`` seen so far gives ``L = s_k - e(s_k)``, a lower bound on
    the row's final float32 k-th score, so a pair can only belong to the top-k if
    ``s + e(s) >= L``; pairs below are dropped for good.  That test runs on the
    bfloat16 block itself, against thresholds rounded down to bfloat16, so no block is
    ever converted.  The survivors (k plus a thin band per row) are kept per block pair
    (:class:`_CandidatePool`), re-scored in float32 there, each unordered pair once, and
    the top-k is taken among them by :func:`pair_inner_products` and
    :func:`order_by_row_score_index`, as on every path.  Returns None where
    :func:`bf16_screen_mode` is ``"off"`` (the caller then searches in float32 blocks).
    ``emulate_bf16`` (or ``HHCL_KNN_BF16=emulate``) rounds operands and outputs explicitly
    around float32 products, so that the screening is testable on any CPU.
    """
    n, dim = x.shape
    bs = int(max(1, min(block_size, n)))
    if not emulate_bf16:
        mode = bf16_screen_mode()
        if mode == "off":
            return None
        emulate_bf16 = mode == "emulate"
    # reused buffers (no bfloat16 copy of all features is kept): the current row block's
    # operand, converted once for all its pairs, a column block's, and the scores
    operand_dtype = torch.float32 if emulate_bf16 else torch.bfloat16
    row_operand, col_operand = torch.empty(bs, dim, dtype=operand_dtype), torch.empty(bs, dim, dtype=operand_dtype)
    scores = torch.empty(bs * bs, dtype=torch.bfloat16)
    row_operand_of = [-1]

    def convert(rows: slice, out: torch.Tensor) -> torch.Tensor:
        """A block in bfloat16 (emulated: rounded to bfloat16, held in float32)."""
        block = out[:rows.stop - rows.start]
        block.copy_(x[rows].bfloat16() if emulate_bf16 else x[rows])
        return block

    def screened(rows: slice, cols: slice) -> torch.Tensor:
        """bfloat16 scores of a block pair (valid until the next call)."""
        if row_operand_of[0] != rows.start:
            row_operand_of[0] = rows.start
            convert(rows, row_operand)
        a = row_operand[:rows.stop - rows.start]
        b = a if cols == rows else convert(cols, col_operand)
        out = scores[:a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0])
        if emulate_bf16:
            out.copy_(a @ b.T)
        else:
            torch.mm(a, b.T, out=out)
        return out

    # d and M 256 rows at a time, through reused buffers: block-sized temporaries (new
    # pages each time) and mixed-dtype arithmetic cost ~20x the conversion itself
    d = max_norm = 0.0
    staging = torch.empty(min(256, bs), dim)
    for a in range(0, n, len(staging)):
        rows = slice(a, min(a + len(staging), n))
        residual = staging[:rows.stop - a].copy_(convert(rows, row_operand)).sub_(x[rows])
        d = max(d, float(torch.linalg.vector_norm(residual, dim=1).max()))
        max_norm = max(max_norm, float(torch.linalg.vector_norm(x[rows], dim=1).max()))
    staging = None
    u = 2.0 ** -8
    operand_error = 1.01 * (2.0 * (max_norm + d) * d + 2.0 * dim * 2.0 ** -24 * (max_norm + d) ** 2) + 1e-6

    def keep_keys(kth: np.ndarray) -> np.ndarray:
        """Order keys of the lowest screened score a pair may have and still reach a row's top-k."""
        s = kth.astype(np.float64)
        low = s - operand_error - u * np.abs(s) / (1 - u)  # L: final float32 k-th score >= this
        w = low - operand_error  # keep iff s + u |s| / (1 - u) >= w
        thr = np.where(w >= 0, w * (1 - u), w * (1 - u) / (1 - 2 * u))
        return _bf16_floor_keys(np.nextafter(thr.astype(np.float32), np.float32(-np.inf)))

    starts = list(range(0, n, bs))
    kth_best = np.full(n, -np.inf, np.float32)  # k-th best screened score seen, per row
    top_vals = np.full((n, k), -np.inf, np.float32)
    pool = _CandidatePool(n)

    def current_keep_keys() -> np.ndarray:
        return keep_keys(kth_best)

    def raise_thresholds(first: int, local_rows: np.ndarray, vals: np.ndarray, grouped: bool) -> None:
        """Merge new screened scores of rows ``first + local_rows`` into the running top-k."""
        # only the scores above a row's k-th best can change its top-k
        local_rows, vals = _compress(vals > kth_best[first + local_rows], local_rows, vals)
        if len(local_rows) == 0:
            return
        if not grouped:  # local rows < block size: 16-bit keys get NumPy's radix sort
            keys = local_rows.astype(np.int16) if bs < 2**15 else local_rows
            order = np.argsort(keys, kind="stable")
            local_rows, vals = local_rows[order], vals[order]
        start = np.flatnonzero(np.r_[True, local_rows[1:] != local_rows[:-1]])
        per_row = np.diff(np.r_[start, len(local_rows)])
        rows = first + local_rows[start]
        padded = np.full((len(rows), k + int(per_row.max())), -np.inf, np.float32)
        padded[:, :k] = top_vals[rows]
        slot = k + np.arange(len(local_rows)) - np.repeat(start, per_row)
        padded[np.repeat(np.arange(len(rows)), per_row), slot] = vals
        best = -np.partition(-padded, k - 1, axis=1)[:, :k]
        top_vals[rows] = best
        kth_best[rows] = best.min(axis=1)

    scratch = np.empty(0, np.int16)  # grown on first use: most blocks never need it
    with torch.no_grad():
        # diagonal blocks first, so that every row has a threshold before the rest
        for a in starts:
            b = min(a + bs, n)
            sim = screened(slice(a, b), slice(a, b))
            kk = min(k, b - a)
            top_vals[a:b, :kk] = torch.topk(sim, kk, dim=1, sorted=False).values.float().numpy()
            kth_best[a:b] = top_vals[a:b].min(axis=1)
            row_keys = keep_keys(kth_best[a:b])
            keys = _bf16_order_keys(sim, scratch, lowest=int(row_keys.min()))
            flat = np.flatnonzero(keys >= row_keys[:, None])
            pool.add(a, a, flat // (b - a), flat % (b - a), keys.ravel()[flat], np.uint8(1), current_keep_keys)
        pairs = [(a, b) for ai, a in enumerate(starts) for b in starts[ai + 1:]]
        for a, b in progress(pairs, total=len(pairs), desc="k-NN blocks"):
            a_end, b_end = min(a + bs, n), min(b + bs, n)
            row_keys, col_keys = keep_keys(kth_best[a:a_end]), keep_keys(kth_best[b:b_end])
            lowest = min(int(row_keys.min()), int(col_keys.min()))
            keys = _bf16_order_keys(screened(slice(a, a_end), slice(b, b_end)), scratch, lowest=lowest)
            # one pass against the block's lowest threshold (a few % pass), then each survivor
            # against its row's and its column's; a row with a far lower threshold than the
            # others would let most of the block through: then every entry is tested
            flat = np.flatnonzero(keys >= lowest)
            if len(flat) > keys.size // 16:
                flat = np.flatnonzero((keys >= row_keys[:, None]) | (keys >= col_keys[None, :]))
            r, c = np.divmod(flat, keys.shape[1])
            found = keys.ravel()[flat]
            for_rows, for_cols = found >= row_keys[r], found >= col_keys[c]
            r, c, found, for_rows, for_cols = _compress(for_rows | for_cols, r, c, found, for_rows, for_cols)
            vals = _bf16_keys_to_float32(found)
            raise_thresholds(a, *_compress(for_rows, r, vals), grouped=True)  # row-major order
            raise_thresholds(b, *_compress(for_cols, c, vals), grouped=False)
            pool.add(a, b, r, c, found, for_rows.view(np.uint8) | (for_cols.view(np.uint8) << 1), current_keep_keys)
        row_operand = col_operand = scores = None  # the buffers go before the re-scoring

        pool.rescore(x, keep_keys(kth_best), bs)
        sims = np.empty((n, k), np.float32)
        idx = np.empty((n, k), np.int64)
        for a in starts:
            local_rows, cols, exact = pool.candidates_of_rows(a, starts)
            m = min(a + bs, n) - a
            if np.bincount(local_rows, minlength=m).min() < k:  # the running top-k always survives
                raise RuntimeError("screened k-NN lost candidates; search again with screen=False")
            sims[a:a + m], idx[a:a + m] = _top_k_of_scored_pairs(local_rows, exact, cols, m, k)
    logger.debug("screened k-NN: operand error %.2e, %.1f float32 re-scores per row", operand_error,
                 pool.rescored / n)
    return sims, idx


class _CandidatePool:
    """Screened pairs that may still reach a row's top-k, kept per block pair.

    A pair is stored once, by its block pair ``(a, b)`` (``b >= a``), as 16-bit offsets
    into both blocks and its 16-bit screened key, with flags: bit 0 if it is a
    candidate for its row's list, bit 1 for its column's (the transposed use).  So one
    float32 re-score serves both lists, and the pairs of a block pair come out of the
    screen in row-major order, which is the sampled matmul's CSR order: nothing is
    sorted.  The pool is pruned in place whenever it has grown by half, against the
    thresholds that have risen since.
    """

    def __init__(self, n: int) -> None:
        self.parts: Dict[Tuple[int, int], Tuple[np.ndarray, ...]] = {}
        self.size, self.prune_at, self.rescored = 0, 4 * n + 1_000_000, 0

    def add(self, a: int, b: int, r: np.ndarray, c: np.ndarray, keys: np.ndarray,
            flags: Union[np.ndarray, np.uint8], keep_keys: Callable[[], np.ndarray]) -> None:
        """Store a block pair's survivors; ``keep_keys()`` gives the current thresholds if a prune is due."""
        flags = np.broadcast_to(np.asarray(flags, np.uint8), r.shape).copy()
        self.parts[(a, b)] = (r.astype(np.uint16), c.astype(np.uint16), keys, flags)
        self.size += len(r)
        if self.size > self.prune_at:
            self.prune(keep_keys())
            self.prune_at = max(self.prune_at, self.size + self.size // 2)

    def prune(self, keep_keys: np.ndarray) -> None:
        """Drop the pairs that the thresholds have risen past; a part at a time."""
        self.size = 0
        for (a, b), (r, c, keys, flags) in self.parts.items():
            flags = (flags & 1) * (keys >= keep_keys[a:][r]) | (flags & 2) * (keys >= keep_keys[b:][c])
            self.parts[(a, b)] = _compress(flags > 0, r, c, keys, flags)
            self.size += len(self.parts[(a, b)][0])

    def rescore(self, x: torch.Tensor, keep_keys: np.ndarray, bs: int) -> None:
        """Final prune, then the score of every pair left (:func:`pair_inner_products`), in place of its key."""
        self.prune(keep_keys)
        for (a, b), (r, c, _, flags) in self.parts.items():
            exact = pair_inner_products(x, a + r.astype(np.int64), b + c.astype(np.int64))
            self.parts[(a, b)] = (r, c, exact, flags)
            self.rescored += len(r)

    def candidates_of_rows(self, a: int, starts: List[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(local row, column, float32 score)`` of every candidate of the rows of block ``a``.

        Row blocks are asked for in increasing order, so a block pair is dropped once
        both of its blocks have been served.
        """
        found = []
        for b in starts:
            if b >= a and (a, b) in self.parts:
                r, c, exact, flags = self.parts[(a, b)]
                rows, cols, scores = _compress((flags & 1) > 0, r, c, exact)
                found.append((rows, b + cols.astype(np.int64), scores))
            elif (b, a) in self.parts:  # served to the rows of block b already
                r, c, exact, flags = self.parts.pop((b, a))
                rows, cols, scores = _compress((flags & 2) > 0, c, r, exact)
                found.append((rows, b + cols.astype(np.int64), scores))
        self.parts.pop((a, a), None)
        local_rows, cols, exact = (np.concatenate(part) for part in zip(*found))
        return local_rows, cols, exact


def _compress(mask: np.ndarray, *arrays: np.ndarray) -> Tuple[np.ndarray, ...]:
    """``a[mask]`` for every array, through one index vector.

    NumPy's boolean indexing branches on every element: on the screen's irregular
    masks it is several times slower than taking by integer index.
    """
    where = np.flatnonzero(mask)
    return tuple(a[where] for a in arrays)


def _block_pair_products(rows_x: torch.Tensor, cols_x: torch.Tensor, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``rows_x[r[t]] . cols_x[c[t]]`` as float32 numpy, for pairs sorted by ``r``.

    A sampled matmul (SDDMM) over the pairs' sparsity pattern, on the tensors' device:
    it reads each feature row in place instead of gathering two (pairs x D) copies,
    which is ~20x faster on CPU for a few million pairs.
    """
    if len(r) == 0:
        return np.zeros(0, np.float32)
    indptr = np.zeros(rows_x.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=rows_x.shape[0]), out=indptr[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        # some torch versions (2.11) still warn, although the pattern is valid by construction
        warnings.filterwarnings("ignore", message=".*[Ss]parse invariant checks are implicitly disabled.*")
        pattern = torch.sparse_csr_tensor(
            torch.from_numpy(indptr), torch.from_numpy(np.asarray(c, np.int64)),
            torch.zeros(len(c), dtype=rows_x.dtype), size=(rows_x.shape[0], cols_x.shape[0]), check_invariants=False,
        ).to(rows_x.device)
        with torch.no_grad():
            return torch.sparse.sampled_addmm(pattern, rows_x, cols_x.T, beta=0.0).values().cpu().numpy()


def order_by_row_score_index(rows: np.ndarray, scores: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The permutation that orders pairs by row, then decreasing score, then increasing column.

    The one tie rule of every k-NN list: ``rows`` are non-negative local row numbers
    (< 2^31), ``scores`` float32 (-0.0 == 0.0), ``cols`` the neighbours' indices.  One
    int64 sort of (row, score) keys; exact score ties within a row (duplicated features)
    are rare, so only their runs are re-ordered by column afterwards.
    """
    key = (rows.astype(np.int64) << 32) | _descending_key(scores)
    order = np.argsort(key)
    tied = np.flatnonzero(key[order[1:]] == key[order[:-1]])
    if len(tied):
        run_start = np.flatnonzero(np.r_[True, np.diff(tied) > 1])
        for first, last in zip(tied[run_start], np.r_[tied[run_start[1:] - 1], tied[-1]] + 2):
            run = order[first:last]
            order[first:last] = run[np.argsort(cols[run], kind="stable")]
    return order


def _bf16_order_keys(block: torch.Tensor, scratch: np.ndarray, lowest: Optional[int] = None) -> np.ndarray:
    """A bfloat16 block's bits as int16 keys that order like the values (in place; -0.0 sorts below 0.0).

    Comparing 16-bit keys in NumPy is several times faster than converting a block to
    float32, and the block is compared twice.  ``lowest``: the lowest key the block
    will be compared with.  When it is positive the bits are used as they are: those
    of non-negative values already order like the values, and those of negative values
    are negative int16, so they fail every comparison as their keys would.
    """
    keys = block.view(torch.int16).numpy()
    if lowest is not None and lowest > 0:
        return keys
    if scratch.size < keys.size:
        scratch.resize(keys.size, refcheck=False)
    sign = scratch[:keys.size].reshape(keys.shape)
    np.right_shift(keys, 15, out=sign)  # -1 for negative values, 0 otherwise
    np.bitwise_and(sign, np.int16(0x7FFF), out=sign)
    np.bitwise_xor(keys, sign, out=keys)  # negative values: magnitude bits reversed
    return keys


def _bf16_keys_to_float32(keys: np.ndarray) -> np.ndarray:
    """The float32 values of :func:`_bf16_order_keys` keys."""
    bits = keys ^ ((keys >> 15) & np.int16(0x7FFF))
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _bf16_floor_keys(values: np.ndarray) -> np.ndarray:
    """Order keys of the largest bfloat16 <= each float32 value: a screened score passes
    ``key >= floor_key(t)`` whenever it is >= t."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    top = (bits >> 16).astype(np.uint16)  # truncation: toward zero
    inexact_negative = ((bits & 0xFFFF) != 0) & ((bits >> 31) == 1)
    top += inexact_negative.astype(np.uint16)  # a negative value rounds away from zero instead
    keys = top.view(np.int16)
    keys ^= (keys >> 15) & np.int16(0x7FFF)
    keys[keys == 0] = -1  # +0.0 -> -0.0, so that a screened -0.0 passes a 0.0 threshold
    return keys


def _descending_key(values: np.ndarray) -> np.ndarray:
    """int64 keys in [0, 2^32) that sort float32 ``values`` in decreasing order (-0.0 == 0.0)."""
    bits = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
    return (~ascending).astype(np.int64)


def pair_inner_products(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``x[rows[t]] . x[cols[t]]`` for every t, as float32 numpy, in any order of the pairs.

    The one scoring of every k-NN path: each pair's value is one dot product of the two
    rows (a sampled matmul on ``x``'s device), which depends on the two rows only, not on
    the other pairs asked for, their order, the thread count or which path asked.
    """
    n = x.shape[0]
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    key = rows * n + cols
    order = None if (len(key) < 2 or bool((key[1:] >= key[:-1]).all())) else np.argsort(key, kind="stable")
    if order is not None:
        rows, cols = rows[order], cols[order]
    # only the spanned rows enter the sampled matmul (a block pair's pairs span two blocks)
    r0, c0 = int(rows[0]), int(cols.min())
    vals = _block_pair_products(x[r0:int(rows[-1]) + 1], x[c0:int(cols.max()) + 1], rows - r0, cols - c0)
    if order is None:
        return vals
    out = np.empty_like(vals)
    out[order] = vals
    return out


def _faiss_flat_gpu(x: torch.Tensor, k: int, query_chunk: int, block_size: int = 2048,
                    spare: int = SPARE_CANDIDATES) -> Tuple[np.ndarray, np.ndarray]:
    """faiss' exact GPU index picks ``k + spare`` candidates per row; :func:`_exact_top_k` finishes."""
    import faiss

    xn = x.cpu().numpy()
    res = faiss.StandardGpuResources()
    cfg = faiss.GpuIndexFlatConfig()
    cfg.device = x.device.index or 0
    index = faiss.GpuIndexFlatIP(res, xn.shape[1], cfg)
    index.add(xn)
    n = xn.shape[0]
    approx, cand = _faiss_search_chunked(index, xn, min(k + spare, n), query_chunk)
    return _exact_top_k(x, np.arange(n, dtype=np.int64), cand, approx, k, block_size=block_size)


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


def _put_self_first(x: torch.Tensor, sims: np.ndarray, idx: np.ndarray,
                     rows_per_chunk: int = 16384) -> Tuple[np.ndarray, np.ndarray]:
    """Move each point to column 0 of its own list (inserting it if the search dropped it).

    The order of the other neighbours is kept; a missing self pushes out the last one.
    Approximate indexes may also return -1 for unfilled slots: those sort last.  Done
    in place (float32 / int64 inputs), a chunk of rows at a time, so that it needs no
    second copy of the lists.
    """
    sims = np.ascontiguousarray(sims, dtype=np.float32)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    n, k = idx.shape
    for a in range(0, n, rows_per_chunk):
        b = min(a + rows_per_chunk, n)
        s_chunk, i_chunk = sims[a:b], idx[a:b]
        self_idx = np.arange(a, b, dtype=np.int64)[:, None]
        is_self = i_chunk == self_idx
        found = is_self.any(1)
        self_sim = np.where(is_self, s_chunk, -np.inf).max(1).astype(np.float32)
        missing = np.flatnonzero(~found)
        if len(missing):
            self_sim[missing] = pair_inner_products(x, a + missing, a + missing)
        ext_idx = np.concatenate([self_idx, i_chunk], axis=1)
        ext_sim = np.concatenate([self_sim[:, None], s_chunk], axis=1)
        drop = np.concatenate([np.zeros((b - a, 1), bool), is_self | (i_chunk < 0)], axis=1)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]
        i_chunk[:] = np.take_along_axis(ext_idx, order, axis=1)
        s_chunk[:] = np.take_along_axis(ext_sim, order, axis=1)
        # slots an approximate index left empty stay empty (-1), after the real neighbours
        empty = np.take_along_axis(drop, order, axis=1)
        i_chunk[empty] = -1
        s_chunk[empty] = -np.inf
    return sims, idx
