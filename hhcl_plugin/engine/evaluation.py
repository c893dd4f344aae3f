"""Feature extraction and retrieval metrics (torchreid's CMC and mAP)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..utils import torchreid_compat as tr
from ..utils.progress import progress


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device, desc: str = "features") -> torch.Tensor:
    """L2-normalised features of every image of ``loader``, in loader order, on the CPU."""
    was_training = model.training
    model.eval()
    chunks = [model(batch["img"].to(device, non_blocking=True)).float().cpu()
              for batch in progress(loader, desc=desc, unit="batch")]
    model.train(was_training)
    return torch.cat(chunks)


def distance_matrix(a: torch.Tensor, b: torch.Tensor, metric: str = "cosine") -> np.ndarray:
    """torchreid's distances between the rows of ``a`` and ``b`` (``cosine`` or ``euclidean``)."""
    return tr.compute_distance_matrix(a, b, metric).numpy()


def evaluate_retrieval(qf: torch.Tensor, gf: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
                       q_cams: np.ndarray, g_cams: np.ndarray, ranks: Sequence[int] = (1, 5, 10),
                       rerank: Optional[Tuple[int, int, float]] = None, metric: str = "cosine",
                       use_metric_cuhk03: bool = False, distmat: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Market-1501 protocol (same identity and camera excluded); figures in percent.

    ``rerank = (k1, k2, lambda)`` adds the same figures after torchreid's k-reciprocal
    re-ranking, under keys ending in ``_rerank``.  ``metric`` and ``use_metric_cuhk03`` mean
    what they mean in torchreid's ``Engine.run``; ``distmat`` is ``distance_matrix(qf, gf, metric)``
    when the caller has it already.
    """
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
