"""Seeded synthetic re-ID-like features, for clustering tests and benchmarks.

Real re-ID training sets have identities with very different numbers of images, groups
of similar-looking identities (same camera, same clothes colour), near-duplicate frames
from the same tracklet and junk images.  Uniformly random clusters would make the
Jaccard supports unrealistically small and the benchmark flattering, so the generator
reproduces those traits:

* cluster sizes drawn from a log-normal (median ~ ``mean_cluster_size * 0.7``, clipped to
  ``[2, max_cluster_size]``);
* cluster centres mixed from a shared "group" direction and their own direction, so
  clusters of a group are correlated (cosine ~ ``group_weight ** 2``);
* per-cluster spread drawn from ``spread`` (isotropic noise of that norm around the centre);
* a fraction of near-duplicates (another point of the cluster plus tiny noise) and a few
  exact duplicates;
* outliers: random directions, label -1.

Points are shuffled so that clusters are not contiguous in index order.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def make_clustered_features(
    n: int,
    dim: int = 2048,
    *,
    seed: int = 0,
    mean_cluster_size: float = 20.0,
    max_cluster_size: int = 300,
    outlier_frac: float = 0.05,
    near_dup_frac: float = 0.03,
    exact_dup_frac: float = 0.005,
    group_size: int = 8,
    group_weight: float = 0.55,
    spread: Tuple[float, float] = (0.55, 0.9),
    out: Optional[np.ndarray] = None,
    chunk: int = 8192,
) -> Tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 L2-normalised features and their int64 labels (-1 = outlier).

    ``out`` may be a preallocated (n, dim) float32 array (e.g. a ``np.memmap``) so that
    large sets are generated chunk by chunk without float64 temporaries.
    """
    if n < 1 or dim < 2:
        raise ValueError(f"need n >= 1 and dim >= 2, got n={n}, dim={dim}")
    rng = np.random.default_rng(seed)
    n_out = int(round(outlier_frac * n))
    n_in = n - n_out
    sizes = []
    total = 0
    sigma_ln = 0.9
    median = mean_cluster_size / np.exp(sigma_ln ** 2 / 2)
    while total < n_in:
        s = int(np.clip(round(rng.lognormal(np.log(median), sigma_ln)), 2, max_cluster_size))
        s = min(s, n_in - total) if n_in - total >= 2 else n_in - total
        sizes.append(s)
        total += s
    sizes = np.asarray(sizes, np.int64)
    n_clusters = len(sizes)
    n_groups = max(1, int(np.ceil(n_clusters / group_size)))

    groups = _unit(rng.standard_normal((n_groups, dim), dtype=np.float32))
    own = _unit(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    group_of = rng.integers(0, n_groups, n_clusters)
    gw = np.float32(group_weight)
    centres = _unit(gw * groups[group_of] + np.sqrt(1 - gw * gw).astype(np.float32) * own)
    sigma = rng.uniform(spread[0], spread[1], n_clusters).astype(np.float32)

    labels = np.concatenate([np.repeat(np.arange(n_clusters), sizes), np.full(n_out, -1)]).astype(np.int64)
    perm = rng.permutation(n)
    labels = labels[perm]

    feats = np.empty((n, dim), np.float32) if out is None else out
    if feats.shape != (n, dim):
        raise ValueError(f"out has shape {feats.shape}, expected {(n, dim)}")
    for a in range(0, n, chunk):
        lab = labels[a:a + chunk]
        noise = rng.standard_normal((len(lab), dim), dtype=np.float32)
        noise *= np.float32(1.0 / np.sqrt(dim))
        inl = lab >= 0
        block = noise  # outliers: the random direction itself
        block[inl] *= sigma[lab[inl]][:, None]
        block[inl] += centres[lab[inl]]
        feats[a:a + chunk] = _unit(block)

    # near-duplicates and exact duplicates of another member of the same cluster
    members = np.flatnonzero(labels >= 0)
    order = members[np.argsort(labels[members], kind="stable")]
    starts = np.searchsorted(labels[order], np.arange(n_clusters))
    n_near = int(round(near_dup_frac * n))
    n_exact = int(round(exact_dup_frac * n))
    picks = rng.choice(members, size=min(len(members), n_near + n_exact), replace=False)
    for t, dst in enumerate(picks):
        c = labels[dst]
        src = order[starts[c] + rng.integers(0, sizes[c])]
        if src == dst:
            continue
        if t < n_near:
            v = feats[src] + rng.standard_normal(dim, dtype=np.float32) * np.float32(2e-3 / np.sqrt(dim))
            feats[dst] = v / np.linalg.norm(v)
        else:
            feats[dst] = feats[src]
    return feats, labels


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x
