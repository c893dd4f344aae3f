"""Ranked gallery images for query vectors: the index's top-k, same-camera filtering, k-reciprocal re-ranking.

Re-ranking uses the clustering's k-reciprocal Jaccard distance (Zhong et al., CVPR'17) on
the query and its top candidates, blended with the cosine distance as the evaluation's
re-ranking does: ``(1 - lambda) * jaccard + lambda * (1 - cos) / 2`` with ``TEST.RERANK_K1``,
``TEST.RERANK_K2`` and ``TEST.RERANK_LAMBDA``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .metadata import ImageRecord
from .store import Gallery

RERANK_CANDIDATES = 100  # gallery images re-ranked per query (at least top-k)


@dataclass
class Match:
    """One gallery image found for a query."""

    rank: int
    path: str
    similarity: float  # cosine similarity (before re-ranking)
    camera: str
    identity: Optional[str]  # the <identity>/ folder it was added from, if any
    distance: Optional[float] = None  # the re-ranked distance, with --rerank


@dataclass
class RerankSettings:
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


def search_gallery(gallery: Gallery, queries: np.ndarray, k: int, query_cameras: Optional[Sequence[str]] = None,
                   rerank: Optional[RerankSettings] = None) -> List[List[Match]]:
    """For each unit-norm query vector, its ``k`` best gallery images.

    ``query_cameras``: exclude gallery images of each query's own camera.
    """
    n_live = len(gallery)
    want = max(k, RERANK_CANDIDATES) if rerank else k
    fetch = want if query_cameras is None else min(n_live, 4 * want)
    while True:
        sims, rows = gallery.search_vectors(queries, min(fetch, n_live) if n_live else 1)
        records = gallery.meta.by_rows(np.unique(rows[rows >= 0]))
        kept = [_keep(s, r, records, None if query_cameras is None else query_cameras[q], want)
                for q, (s, r) in enumerate(zip(sims, rows))]
        short = any(len(rec) < min(want, n_live) for _, rec in kept)
        if query_cameras is None or not short or fetch >= n_live:
            break
        fetch = min(n_live, 4 * fetch)  # many hits were the query's own camera: look further
    results = []
    for q, (s, recs) in enumerate(kept):
        if rerank and len(recs) > 1:
            dist = rerank_distances(queries[q], gallery.vectors()[[r.row for r in recs]], rerank)
            order = np.argsort(dist, kind="stable")[:k]
            results.append([_match(i + 1, recs[j], s[j], dist[j]) for i, j in enumerate(order)])
        else:
            results.append([_match(i + 1, rec, s[i]) for i, rec in enumerate(recs[:k])])
    return results


def _keep(sims: np.ndarray, rows: np.ndarray, records: dict, camera: Optional[str], want: int):
    out_s, out_r = [], []
    for s, r in zip(sims, rows):
        rec = records.get(int(r))
        if r < 0 or rec is None or (camera is not None and rec.camera == camera):
            continue
        out_s.append(float(s))
        out_r.append(rec)
        if len(out_r) == want:
            break
    return np.asarray(out_s, np.float32), out_r


def _match(rank: int, rec: ImageRecord, sim: float, dist: Optional[float] = None) -> Match:
    return Match(rank, rec.path, float(sim), rec.camera, rec.identity, None if dist is None else float(dist))


def rerank_distances(query: np.ndarray, candidates: np.ndarray, settings: RerankSettings) -> np.ndarray:
    """Re-ranked distance of each candidate to the query, from the Jaccard distance over query + candidates."""
    from ..clustering.jaccard import compute_jaccard_distance_sparse

    feats = np.vstack([np.asarray(query, np.float32)[None], np.asarray(candidates, np.float32)])
    n = len(feats)
    k1, k2 = min(settings.k1, n), min(settings.k2, n)
    jaccard = compute_jaccard_distance_sparse(feats, k1, k2, bound=1.0)
    row = np.ones(n, np.float32)  # pairs the sparse graph leaves out are at distance 1
    start, stop = jaccard.indptr[0], jaccard.indptr[1]
    row[jaccard.indices[start:stop]] = jaccard.data[start:stop]
    cosine = (1.0 - feats[1:] @ feats[0]) / 2.0
    return (1.0 - settings.lambda_value) * row[1:] + settings.lambda_value * cosine


def search(gallery: Gallery, images_or_features: "np.ndarray | Sequence", k: int = 10,
           query_cameras: Optional[Sequence[str]] = None, rerank: Optional[RerankSettings] = None,
           config_file: str = "", opts: Sequence[str] = ()) -> List[List[Match]]:
    """The Python API behind ``Gallery.search``: features (N, D) or images (paths / PIL images) as queries.

    Images are embedded with the gallery's own model (``config_file`` / ``opts`` may change
    only what does not change the features, e.g. ``MODEL.DEVICE``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(images_or_features, np.ndarray):
        queries = np.asarray(images_or_features, np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.shape[1] != gallery.dim:
            raise ValueError(f"query features have dimension {queries.shape[1]}, the gallery's {gallery.dim}")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    else:
        queries = embed_queries(gallery, list(images_or_features), config_file, opts)
    return search_gallery(gallery, queries, k, query_cameras, rerank)


def gallery_config(gallery: Gallery, config_file: str = "", opts: Sequence[str] = (), verify_weights: bool = True):
    """The gallery's config with the user's additions; refused when they make it another model."""
    from .model_identity import check_same_model, stored_config

    cfg = stored_config(gallery.identity, config_file, opts)
    check_same_model(gallery.identity, cfg, gallery.folder, verify_weights)
    return cfg


def embed_queries(gallery: Gallery, images: Sequence, config_file: str = "", opts: Sequence[str] = (),
                  batch_size: int = 0, cfg=None) -> np.ndarray:
    """Features of query images with the gallery's model (``cfg``: that config, when already checked)."""
    from ..deploy.embedder import Embedder
    from .images import embed_images

    cfg = gallery_config(gallery, config_file, opts) if cfg is None else cfg

    if all(isinstance(i, str) for i in images):
        return embed_images(cfg, images, batch_size)
    return Embedder(cfg).embed(images, batch_size=batch_size)  # PIL images
