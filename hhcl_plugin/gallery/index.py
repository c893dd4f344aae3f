"""The faiss index of a gallery's vectors: exact (flat) for small galleries, approximate above.

Vectors are unit-norm, so inner product is cosine similarity.  Kinds (``--index``):

* ``flat``: exact inner product, every vector scanned (4 D bytes per vector in memory);
* ``ivf``: inverted lists over ``2 sqrt(N)`` k-means cells, vectors stored as 8-bit scalar
  codes (D bytes each, a quarter of flat); ``nprobe`` cells scanned per query, the
  smallest that reaches :data:`RECALL_TARGET` on a sample of the gallery's own vectors;
* ``hnsw``: a navigable small-world graph over full vectors (more memory than flat, fast
  queries, slow to build: for galleries of up to a few hundred thousand);
* ``auto``: ``flat`` while a query scans at most :data:`FLAT_MAX_VALUES` numbers (10,000
  vectors of 2048, 16,000 of 1280), ``ivf`` above: beyond it an exact single query took over
  10 ms on a 2-core CPU (``docs/search.md`` has the measurements).

An index file covers a range of vector rows (a segment): ``add`` writes a segment of the new
rows only, so adding to a large gallery never rewrites its index.  Where faiss sees a GPU,
flat and ivf indexes are searched on it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..utils.registry import Registry

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw", "auto")
FLAT_MAX_VALUES = 10_000 * 2048  # auto: exact search while rows x dim is at most this (docs/search.md)
RECALL_TARGET = 0.95  # recall@10 against exact search that the approximate kinds are tuned to reach
TUNING_MARGIN = 0.02  # tuned to TARGET + MARGIN on the sample: 200 queries measure recall to about +-0.015
RECALL_QUERIES = 200  # gallery vectors used as queries to measure it
ADD_CHUNK = 65_536  # vectors added to an index at a time (bounds the temporary memory)

GALLERY_INDEX_REGISTRY = Registry("GALLERY_INDEX")
GALLERY_INDEX_REGISTRY.__doc__ = """Gallery index kinds: ``cls()`` with ``train``/``empty``/``search_params``."""


def resolve_kind(kind: str, num_rows: int, dim: int) -> str:
    """The kind ``auto`` stands for at ``num_rows`` vectors of ``dim`` (other kinds are themselves)."""
    if kind != "auto":
        return kind
    return "flat" if num_rows * dim <= FLAT_MAX_VALUES else "ivf"


@dataclass
class IndexSettings:
    """What a gallery records about its index: the kind asked for, the kind built, and its search knob."""

    requested: str  # flat | ivf | hnsw | auto
    kind: str  # flat | ivf | hnsw
    search_knob: int = 0  # nprobe (ivf) or efSearch (hnsw)
    recall_at_10: Optional[float] = None  # of the approximate kind against exact search, measured at build

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@GALLERY_INDEX_REGISTRY.register(name="flat")
class FlatKind:
    exact = True

    def template(self, vectors: np.ndarray, seed: int = 0, rows: Optional[np.ndarray] = None) -> Any:
        import faiss

        return faiss.IndexFlatIP(vectors.shape[1])

    def search_params(self, knob: int, sel: Any = None) -> Any:
        import faiss

        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def set_knob(self, index: Any, knob: int) -> None:
        pass


@GALLERY_INDEX_REGISTRY.register(name="ivf")
class IVFKind:
    """IVF with 8-bit scalar quantisation, trained (k-means and code ranges) on a sample of the vectors."""

    exact = False
    knobs = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

    @staticmethod
    def num_lists(n: int) -> int:
        return int(min(max(16, round(2 * math.sqrt(n))), max(1, n // 39)))

    def template(self, vectors: np.ndarray, seed: int = 0, rows: Optional[np.ndarray] = None) -> Any:
        import faiss

        rows = np.arange(len(vectors)) if rows is None else rows
        n, d = len(rows), vectors.shape[1]
        nlist = self.num_lists(n)
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10  # k-means iterations: beyond ~10 the cells barely move, the time does
        index.cp.seed = seed
        sample = np.sort(np.random.default_rng(seed).choice(rows, min(n, 40 * nlist), replace=False))
        logger.info("training the ivf index: %d cells on %d of the %d vectors", nlist, len(sample), n)
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        return index

    def search_params(self, knob: int, sel: Any = None) -> Any:
        import faiss

        return faiss.SearchParametersIVF(nprobe=knob, sel=sel) if sel is not None else \
            faiss.SearchParametersIVF(nprobe=knob)

    def set_knob(self, index: Any, knob: int) -> None:
        index.nprobe = knob


@GALLERY_INDEX_REGISTRY.register(name="hnsw")
class HNSWKind:
    exact = False
    knobs = (16, 32, 64, 128, 256, 512)

    def template(self, vectors: np.ndarray, seed: int = 0, rows: Optional[np.ndarray] = None) -> Any:
        import faiss

        index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        return index

    def search_params(self, knob: int, sel: Any = None) -> Any:
        import faiss

        return faiss.SearchParametersHNSW(efSearch=knob, sel=sel) if sel is not None else \
            faiss.SearchParametersHNSW(efSearch=knob)

    def set_knob(self, index: Any, knob: int) -> None:
        index.hnsw.efSearch = knob


def index_kind(kind: str) -> Any:
    return GALLERY_INDEX_REGISTRY.get(kind)()


def empty_copy(template: Any) -> Any:
    """An empty index of the same kind and training (to hold a new segment)."""
    import faiss

    index = faiss.clone_index(template)
    index.reset()
    return index


def add_rows(index: Any, vectors: np.ndarray, first: int, stop: int,
             progress_cb: Callable[[int], None] = lambda n: None) -> Any:
    """Add ``vectors[first:stop]`` to ``index`` a chunk at a time (``vectors`` may be a memory map)."""
    for a in range(first, stop, ADD_CHUNK):
        b = min(stop, a + ADD_CHUNK)
        index.add(np.ascontiguousarray(vectors[a:b], dtype=np.float32))
        progress_cb(b - a)
    return index


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, live: Optional[np.ndarray] = None,
               chunk: int = 65_536) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of ``queries`` against ``vectors`` (dead rows excluded), chunk by chunk."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for a in range(0, len(vectors), chunk):
        block = np.asarray(vectors[a:a + chunk], dtype=np.float32)
        s = q @ block.T
        if live is not None:
            s[:, ~live[a:a + len(block)]] = -np.inf
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + a], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each exact top-k list that the approximate list also holds."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def _without_self(lists: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` entries of each list other than the query's own row (it would flatter the recall)."""
    out = np.empty((len(lists), k), np.int64)
    for i, (row, q) in enumerate(zip(lists, queries)):
        out[i] = row[row != q][:k] if (row == q).any() else row[:k]
    return out


def tune_search_knob(kind_name: str, index: Any, vectors: np.ndarray, live: Optional[np.ndarray] = None,
                     seed: int = 0, k: int = 10, sel: Any = None) -> Tuple[int, Optional[float]]:
    """The smallest nprobe / efSearch whose recall@k against exact search reaches :data:`RECALL_TARGET`.

    Measured on :data:`RECALL_QUERIES` of the gallery's own live vectors as queries, each
    query's own row left out of both lists (``sel``: the faiss selector of the live rows); returns the knob and its recall
    (``(0, None)`` for the exact kind).
    """
    kind = index_kind(kind_name)
    if kind.exact:
        return 0, None
    rows = np.flatnonzero(live) if live is not None else np.arange(len(vectors))
    sample = np.sort(np.random.default_rng(seed).choice(rows, min(len(rows), RECALL_QUERIES), replace=False))
    queries = np.ascontiguousarray(vectors[sample], dtype=np.float32)
    k = min(k, len(rows) - 1)
    if k < 1:
        return kind.knobs[-1], None
    _, truth = exact_topk(vectors, queries, k + 1, live)
    truth = _without_self(truth, sample, k)
    recall = 0.0
    for knob in kind.knobs:
        _, found = index.search(queries, k + 1, params=kind.search_params(knob, sel))
        recall = recall_at(_without_self(found, sample, k), truth)
        if recall >= RECALL_TARGET + TUNING_MARGIN:
            break
    logger.info("%s index: recall@%d %.3f against exact search (%s %d, %d of its own vectors as queries)",
                kind_name, k, recall, "nprobe" if kind_name == "ivf" else "efSearch", knob, len(sample))
    return knob, recall


def on_device(index: Any, kind_name: str) -> Any:
    """The index on the GPU(s) where faiss sees one (flat and ivf), else itself."""
    from ..clustering.knn import faiss_num_gpus

    if kind_name == "hnsw" or faiss_num_gpus() == 0:
        return index
    import faiss

    return faiss.index_cpu_to_all_gpus(index)
