"""The approximate k-NN (CLUSTER.KNN_INDEX ivf / auto) and the Clusterer base class."""
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from hhcl_plugin.clustering import Clusterer, build_clusterer, knn_search
from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.clustering.build import CLUSTERER_REGISTRY
from hhcl_plugin.clustering.knn import KNNGraph, pair_inner_products
from hhcl_plugin.clustering.knn_approx import approximate_knn, resolve_knn_index
from hhcl_plugin.clustering.result import ClusteringResult
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.utils.errors import ConfigError


def _cfg(*overrides: str):
    return setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", *overrides])


@pytest.mark.parametrize("low_precision", [False, True], ids=["float32", "bfloat16"])
def test_approximate_lists_are_exactly_scored_ordered_and_nearly_complete(low_precision):
    feats, _ = make_clustered_features(6000, 64, seed=2)
    x = torch.from_numpy(feats)
    sims, idx = approximate_knn(x, 20, nprobe=8, low_precision=low_precision)
    _, exact = knn_search(feats, 20, index="exact")
    # every listed neighbour carries the score the exact search's re-scoring gives it
    rows = np.repeat(np.arange(len(feats)), 20)
    np.testing.assert_array_equal(sims.ravel(), pair_inner_products(x, rows, idx.ravel()))
    # ordered by score, then index
    same = sims[:, 1:] == sims[:, :-1]
    assert np.all(sims[:, 1:] <= sims[:, :-1])
    assert np.all(idx[:, 1:][same] > idx[:, :-1][same])
    assert np.all([len(set(r)) == 20 for r in idx])  # no neighbour twice
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(exact, idx)])
    assert recall > 0.9


def test_ivf_labels_agree_with_the_exact_search():
    feats, _ = make_clustered_features(6000, 1024, seed=4)
    sims, approx = knn_search(feats, 20, index="ivf")
    assert np.array_equal(approx[:, 0], np.arange(len(feats)))  # self first, as for the exact search
    on_exact = build_clusterer(_cfg("CLUSTER.EPS", "0.6", "CLUSTER.KNN_INDEX", "exact"))(feats)
    on_ivf = build_clusterer(_cfg("CLUSTER.EPS", "0.6", "CLUSTER.KNN_INDEX", "ivf"))(feats)
    assert on_exact.num_clusters > 50
    assert adjusted_rand_score(on_exact.labels, on_ivf.labels) > 0.97


def test_ivf_on_too_few_points_falls_back_to_the_exact_search():
    feats, _ = make_clustered_features(60, 16, seed=3)  # too few points for two cells
    assert approximate_knn(torch.from_numpy(feats), 8) is None
    sims_exact, exact = knn_search(feats, 8)
    sims_ivf, approx = knn_search(feats, 8, index="ivf")
    np.testing.assert_array_equal(exact, approx)
    np.testing.assert_array_equal(sims_exact, sims_ivf)


def test_auto_searches_exactly_below_the_crossover_and_approximately_above():
    assert resolve_knn_index("auto", 1000, crossover=5000) == "exact"
    assert resolve_knn_index("auto", 5000, crossover=5000) == "ivf"
    assert resolve_knn_index("exact", 10**7) == "exact"
    assert resolve_knn_index("auto", 10**7, on_gpu=True) == "exact"
    feats, _ = make_clustered_features(500, 32, seed=1)
    np.testing.assert_array_equal(knn_search(feats, 10, index="auto")[1], knn_search(feats, 10)[1])


def test_unknown_knn_index_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        _cfg("CLUSTER.KNN_INDEX", "hnsw_typo")
    assert str(e.value) == "CLUSTER.KNN_INDEX is 'hnsw_typo', expected one of exact, ivf, auto"


class _EveryPointAlone(Clusterer):
    """A project's own clusterer: labels from the k-NN graph, nothing else to know."""

    @property
    def knn_k(self) -> int:
        return 3

    def cluster_knn(self, graph: KNNGraph) -> ClusteringResult:
        self.seen = graph
        return ClusteringResult.from_labels(np.full(len(graph.idx), -1), {}, {"min": 0.5})

    def no_clusters_hint(self, result: ClusteringResult) -> str:
        return "no clusters: lower MY_PROJECT.THRESHOLD"


def test_clusterer_base_builds_or_takes_the_graph_and_gives_its_own_hint():
    feats, _ = make_clustered_features(300, 16, seed=0)
    clusterer = _EveryPointAlone(_cfg("CLUSTER.KNN_INDEX", "exact"))
    result = clusterer(feats)
    assert clusterer.seen.idx.shape == (300, 3)  # built with the subclass's knn_k
    assert set(result.seconds) >= {"knn", "total"}
    given = clusterer.seen
    clusterer(feats, knn=given)
    assert clusterer.seen is given  # a given graph (the sharded search's) is used as it is
    assert clusterer.no_clusters_hint(result) == "no clusters: lower MY_PROJECT.THRESHOLD"


def test_registered_clusterers_name_their_own_settings_in_the_hint():
    empty = ClusteringResult.from_labels(np.full(10, -1), {}, {"min": 0.9})
    dbscan = build_clusterer(_cfg("CLUSTER.EPS", "0.1"))
    infomap = build_clusterer(_cfg("CLUSTER.NAME", "infomap"))
    assert all(isinstance(c, Clusterer) for c in (dbscan, infomap))
    assert "raise CLUSTER.EPS" in dbscan.no_clusters_hint(empty)
    assert "CLUSTER.EPS" not in infomap.no_clusters_hint(empty)
    assert "CLUSTER.INFOMAP" in infomap.no_clusters_hint(empty)
    assert all(issubclass(CLUSTERER_REGISTRY.get(name), Clusterer) for name in ("dbscan_jaccard", "infomap"))


def test_a_second_cell_split_only_adds_true_neighbours():
    feats, _ = make_clustered_features(5000, 256, seed=6)
    x = torch.from_numpy(feats)
    _, exact = knn_search(feats, 20, index="exact")
    recall = []
    for partitions in (1, 2):
        _, idx = approximate_knn(x, 20, nprobe=4, partitions=partitions, low_precision=False)
        recall.append(np.mean([len(set(a) & set(b)) / 20 for a, b in zip(exact, idx)]))
    assert recall[0] < 1.0  # 4 probes miss some: the test can tell
    assert recall[1] > recall[0]
