"""Retrieval metrics: the Market-1501 protocol, with and without k-reciprocal re-ranking."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.engine import evaluate_retrieval


@pytest.fixture(scope="module")
def split():
    """Query and gallery from clustered features (identities = clusters), random cameras."""
    x, y = make_clustered_features(1500, 64, seed=0, spread=(0.8, 1.1))
    keep = y >= 0
    x, y = F.normalize(torch.from_numpy(np.ascontiguousarray(x[keep])).float(), dim=1), y[keep]
    rng = np.random.default_rng(0)
    cams = rng.integers(0, 6, len(y))
    q = rng.random(len(y)) < 0.15
    return x[q], x[~q], y[q], y[~q], cams[q], cams[~q]


def test_re_ranked_figures_come_only_when_asked(split):
    plain = evaluate_retrieval(*split)
    both = evaluate_retrieval(*split, rerank=(20, 6, 0.3))
    assert set(plain) == {"mAP", "rank1", "rank5", "rank10"}
    assert set(both) == set(plain) | {f"{k}_rerank" for k in plain}
    assert {k: both[k] for k in plain} == plain
    assert all(0.0 <= v <= 100.0 for v in both.values())


def test_re_ranking_with_lambda_one_keeps_the_original_ranking(split):
    """lambda = 1 keeps only the original distance (rescaled per query): the same ranks."""
    result = evaluate_retrieval(*split, rerank=(20, 6, 1.0))
    for key in ("mAP", "rank1", "rank5", "rank10"):
        assert result[f"{key}_rerank"] == pytest.approx(result[key], abs=1e-9)


def test_re_ranking_raises_map_on_clustered_identities(split):
    """Members of a query's identity are each other's reciprocal neighbours: re-ranking pulls them up."""
    result = evaluate_retrieval(*split, rerank=(20, 6, 0.3))
    assert result["mAP_rerank"] > result["mAP"] + 1.0
