"""Retrieval metrics (torchreid's CMC and mAP); features come from :func:`.features.extract_features`."""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils import torchreid_compat as tr

logger = logging.getLogger(__name__)


def distance_matrix(a: torch.Tensor, b: torch.Tensor, metric: str = "cosine") -> np.ndarray:
    """torchreid's distances between the rows of ``a`` and ``b`` (``cosine`` or ``euclidean``)."""
    return tr.compute_distance_matrix(a, b, metric).numpy()


def protocol_cameras(q_cams: np.ndarray, g_cams: np.ndarray) -> Tuple[np.ndarray, np.ndarray, str]:
    """The cameras to score with, and the protocol's name.

    torchreid drops gallery items of the query's identity *and* camera (Market-1501's
    cross-camera protocol).  When query and gallery share a single camera that would drop
    every positive, so there the query and gallery get distinct stand-in cameras: only
    the query image itself is left out (it is not in the gallery), nothing else.
    """
    if len(np.union1d(q_cams, g_cams)) > 1:
        return q_cams, g_cams, "cross-camera (same identity and camera excluded)"
    return np.zeros(len(q_cams), dtype=np.int64), np.ones(len(g_cams), dtype=np.int64), \
        "one camera (no same-camera exclusion: every gallery image of the identity counts)"


def evaluate_retrieval(qf: torch.Tensor, gf: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
                       q_cams: np.ndarray, g_cams: np.ndarray, ranks: Sequence[int] = (1, 5, 10),
                       rerank: Optional[Tuple[int, int, float]] = None, metric: str = "cosine",
                       use_metric_cuhk03: bool = False, distmat: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Market-1501 protocol (same identity and camera excluded) or, with one camera, no exclusion
    (see :func:`protocol_cameras`); figures in percent.

    ``rerank = (k1, k2, lambda)`` adds the same figures after torchreid's k-reciprocal
    re-ranking, under keys ending in ``_rerank``.  ``metric`` and ``use_metric_cuhk03`` mean
    what they mean in torchreid's ``Engine.run``; ``distmat`` is ``distance_matrix(qf, gf, metric)``
    when the caller has it already.
    """
    q_cams, g_cams, protocol_name = protocol_cameras(np.asarray(q_cams), np.asarray(g_cams))
    logger.info("retrieval protocol: %s", protocol_name)
    distmat = distance_matrix(qf, gf, metric) if distmat is None else distmat
    protocol = dict(ranks=ranks, use_metric_cuhk03=use_metric_cuhk03)
    result = _cmc_map(distmat, q_pids, g_pids, q_cams, g_cams, **protocol)
    if rerank is not None:
        k1, k2, lambda_value = rerank
        reranked = tr.re_ranking(distmat, distance_matrix(qf, qf, metric), distance_matrix(gf, gf, metric),
                                 k1=k1, k2=k2, lambda_value=lambda_value)
        result.update({f"{key}_rerank": value
                       for key, value in _cmc_map(reranked, q_pids, g_pids, q_cams, g_cams, **protocol).items()})
    return result


def _cmc_map(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray, g_cams: np.ndarray,
             ranks: Sequence[int], use_metric_cuhk03: bool) -> Dict[str, float]:
    cmc, mAP = tr.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max(max(ranks), 1),
                                use_metric_cuhk03=use_metric_cuhk03)
    result = {"mAP": 100.0 * float(mAP)}
    result.update({f"rank{r}": 100.0 * float(cmc[r - 1]) for r in ranks})
    return result
