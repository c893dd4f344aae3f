"""A picture of one clustering: a few random clusters, one row each, and a row of outliers.

Without labels, a person judges pseudo labels by looking at them: a row that shows one
person is a good cluster, a row that mixes people says eps is too large, and an outlier
row full of people who appear in the clusters above says it is too small.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ..data.image_list import read_image

THUMBNAIL = (48, 96)  # width, height: the 1:2 aspect of person crops


def draw_cluster_grid(paths: Sequence[str], labels: np.ndarray, out_path: str, *, title: str = "",
                      clusters: int = 6, members: int = 8, seed: int = 0,
                      ground_truth: Optional[np.ndarray] = None) -> str:
    """Write the grid to ``out_path`` (PNG) and return that path.

    Args:
        paths: image file of each clustered item, in the order of ``labels``.
        labels: pseudo label of each item, -1 for outliers.
        title: the figure's title, e.g. the eps and the cluster count.
        clusters, members: rows of clusters drawn (the largest, and random others) and images per row
            (random, reproducible from ``seed``).
        ground_truth: identities, where known: each image gets a green frame when it shows its row's most
            frequent identity and a red one when not (outliers: no frame).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    sizes = np.bincount(labels[labels >= 0])
    chosen = np.flatnonzero(sizes)
    if len(chosen) > clusters:  # the largest always: it is where different people merge first when eps is too large
        largest = int(np.argmax(sizes))
        others = rng.choice(chosen[chosen != largest], size=clusters - 1, replace=False)
        chosen = np.sort(np.append(others, largest))
    sample = lambda idx: np.sort(rng.choice(idx, min(members, len(idx)), replace=False))  # noqa: E731
    rows = [(f"cluster {cid}\n{int(sizes[cid])} images", sample(np.flatnonzero(labels == cid))) for cid in chosen]
    outliers = np.flatnonzero(labels < 0)
    rows.append((f"outliers\n{len(outliers)} images", sample(outliers)))

    fig, axes = plt.subplots(len(rows), members, figsize=(0.75 * members + 0.9, 1.3 * len(rows)), squeeze=False)
    for (name, idx), row_axes in zip(rows, axes):
        majority = None
        if ground_truth is not None and name.startswith("cluster") and len(idx):
            values, counts = np.unique(ground_truth[idx], return_counts=True)
            majority = values[np.argmax(counts)]
        for col, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(idx):
                ax.imshow(read_image(paths[idx[col]]).resize(THUMBNAIL))
                if majority is not None:
                    colour = "tab:green" if ground_truth[idx[col]] == majority else "tab:red"
                    for spine in ax.spines.values():
                        spine.set(visible=True, color=colour, linewidth=2.5)
        row_axes[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path
