"""``CLUSTER.EPS``: a fixed DBSCAN radius, or ``auto``, one chosen from the Jaccard distances alone.

The rule (``auto``): eps is the median, over the images, of each image's Jaccard distance
to its nearest other image, clipped into ``AUTO_EPS_RANGE``.  Half of the images then have
at least one neighbour within eps.  It needs no labels and follows the features: it is
recomputed at every clustering.

Why this rule: on ``synthreid`` ``default`` with ImageNet initialisation (``configs/hhcl_synth.yml``)
the ground-truth ARI of DBSCAN is within 90% of its best only for eps in a narrow band
(0.48..0.59), and the median nearest-neighbour distance fell inside it on four generation
seeds, while the knee of the sorted k-th-neighbour distances (the usual DBSCAN heuristic)
fell at 0.76..0.89, far above it.  Its cost: about half of the images are outliers at every
clustering (those with no neighbour within eps), also late in training.  ``docs/eps.md`` has the measurements.
"""
from __future__ import annotations

import numpy as np

from ..config.config import AUTO, EpsSetting, check_eps  # noqa: F401  (the value check lives with the config's)

AUTO_EPS_RANGE = (0.05, 0.95)


def auto_eps(nearest: np.ndarray) -> float:
    """The ``auto`` radius from each image's distance to its nearest other image (1.0 where it has none)."""
    if len(nearest) == 0:
        raise ValueError("auto eps needs at least one nearest-neighbour distance")
    low, high = AUTO_EPS_RANGE
    return float(np.clip(np.median(np.asarray(nearest, np.float64)), low, high))


def largest_eps(setting: EpsSetting) -> float:
    """The largest radius a setting can stand for: the Jaccard graph's bound needed to cluster with it."""
    return AUTO_EPS_RANGE[1] if setting == AUTO else float(setting)


def resolve_eps(setting: EpsSetting, nearest: np.ndarray) -> float:
    """The radius a setting stands for: itself, or the ``auto`` rule applied to ``nearest``."""
    return auto_eps(nearest) if setting == AUTO else float(setting)
