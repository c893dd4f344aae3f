"""Clustering: k-NN, Jaccard distance against a brute-force reference, DBSCAN, the clusterer."""
from typing import Optional

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from hhcl_plugin.clustering import (
    build_clusterer,
    compute_jaccard_distance_dense,
    compute_jaccard_distance_sparse,
    dbscan_precomputed_sparse,
    knn_search,
    relabel_consecutive,
)
from hhcl_plugin.clustering.knn import _descending_key
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.utils.errors import ClusteringError


def brute_force_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The k-reciprocal Jaccard distance straight from its definition, with Python sets and loops."""
    n = len(x)
    sim = x.astype(np.float64) @ x.astype(np.float64).T
    order = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: -sim[i, j])
        order.append([i] + others)

    def nbrs(i, k):
        return order[i][:k]

    def recip(i, k):
        return [j for j in nbrs(i, k) if i in nbrs(j, k)]

    kh = int(round(k1 / 2)) + 1
    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        star = set(r)
        for j in r:
            rh = recip(j, kh)
            if len(set(r) & set(rh)) > 2 / 3 * len(rh):
                star |= set(rh)
        star = sorted(star)
        w = np.exp(-(2 - 2 * sim[i, star]))
        v[i, star] = w / w.sum()
    vq = np.stack([v[nbrs(i, k2)].mean(0) for i in range(n)]) if k2 > 1 else v
    dist = np.ones((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = 1 - np.minimum(vq[i], vq[j]).sum() / np.maximum(vq[i], vq[j]).sum()
    return dist


def small_features(n=150, dim=16, seed=0):
    feats, labels = make_clustered_features(n, dim, seed=seed, mean_cluster_size=8, outlier_frac=0.1,
                                            near_dup_frac=0.0, exact_dup_frac=0.0)
    return feats, labels


def test_knn_is_exact_with_self_first():
    x, _ = small_features(200, 32, seed=1)
    sims, idx = knn_search(x, 7, block_size=64)
    assert (idx[:, 0] == np.arange(len(x))).all()
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    expect = np.argsort(-full, axis=1)[:, :6]
    assert (np.sort(idx[:, 1:], 1) == np.sort(expect, 1)).all()
    np.testing.assert_allclose(sims[:, 1:], np.take_along_axis(full, idx[:, 1:], 1), atol=1e-5)


def assert_exact_topk(x: np.ndarray, sims: np.ndarray, idx: np.ndarray, tol: float = 1e-6) -> None:
    """Every returned neighbour scores (in float64) at least as high as every point left out."""
    x64 = x.astype(np.float64)
    full = x64 @ x64.T
    n, k = idx.shape
    assert (idx[:, 0] == np.arange(n)).all()
    assert (np.sort(idx, 1)[:, 1:] != np.sort(idx, 1)[:, :-1]).all(), "a neighbour listed twice"
    kept = np.take_along_axis(full, idx, 1)
    np.testing.assert_allclose(sims, kept, atol=tol)
    left_out = full.copy()
    np.put_along_axis(left_out, idx, -np.inf, 1)
    assert (left_out.max(1) <= kept[:, 1:].min(1) + tol).all()
    assert (np.diff(sims[:, 1:], axis=1) <= tol).all(), "neighbours not in decreasing order"


def test_pair_inner_products_in_any_order():
    from hhcl_plugin.clustering.knn import pair_inner_products

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    rows, cols = rng.integers(0, 50, 300), rng.integers(0, 50, 300)  # unsorted, with repeats
    got = pair_inner_products(torch.from_numpy(x), rows, cols)
    np.testing.assert_allclose(got, (x[rows] * x[cols]).sum(1), atol=1e-5)
    assert pair_inner_products(torch.from_numpy(x), rows[:0], cols[:0]).shape == (0,)


@pytest.mark.parametrize("emulate", [True, False])
def test_screened_knn_is_the_exact_top_k_on_hard_features(emulate):
    """bf16 screening (emulated on any CPU, or the CPU's own where it has it) keeps the float32 top-k.

    Duplicates, near-duplicates, clusters of very different sizes and outliers make
    many scores tie or fall inside the screening band; several blocks, the last one
    partial, exercise the symmetric block pairs.
    """
    from hhcl_plugin.clustering.knn import _screened_topk, _put_self_first

    x, _ = make_clustered_features(2300, 128, seed=3, mean_cluster_size=12, near_dup_frac=0.1, exact_dup_frac=0.05)
    xt = torch.from_numpy(x)
    found = _screened_topk(xt, 31, block_size=512, emulate_bf16=emulate)
    if found is None:  # this CPU has no bfloat16 matmul: knn_search falls back to float32 blocks
        found = knn_search(x, 31, block_size=512)
    sims, idx = _put_self_first(xt, *found)
    assert_exact_topk(x, sims, idx)


def test_bf16_keys_order_like_the_values_and_floor_thresholds_never_reject_a_passing_score():
    """The screen compares 16-bit keys instead of values: a score >= a threshold must pass."""
    from hhcl_plugin.clustering.knn import _bf16_floor_keys, _bf16_keys_to_float32, _bf16_order_keys

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(50_000), [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf]]).astype(np.float32)
    scores = torch.from_numpy(values).bfloat16()
    as_float = scores.float().numpy()
    keys = _bf16_order_keys(scores.clone(), np.empty(len(values), np.int16))
    np.testing.assert_array_equal(_bf16_keys_to_float32(keys), as_float)
    order = np.lexsort((keys, as_float))  # by value; -0.0 and 0.0 by key
    assert (np.diff(keys[order].astype(np.int32)) >= 0).all()
    thresholds = np.concatenate([rng.standard_normal(len(values) - 2), [0.0, -0.0]]).astype(np.float32)
    passes = keys >= _bf16_floor_keys(thresholds)
    assert passes[as_float >= thresholds].all()
    assert passes.mean() < (as_float >= thresholds).mean() + 0.01  # the floor admits only a sliver more


def test_screened_knn_handles_k_larger_than_a_block():
    from hhcl_plugin.clustering.knn import _screened_topk, _put_self_first

    x, _ = make_clustered_features(300, 32, seed=4)
    xt = torch.from_numpy(x)
    sims, idx = _put_self_first(xt, *_screened_topk(xt, 40, block_size=32, emulate_bf16=True))
    assert_exact_topk(x, sims, idx)


@pytest.mark.parametrize("k1,k2", [(10, 3), (6, 1), (20, 6)])
def test_sparse_and_dense_jaccard_match_brute_force(k1, k2):
    x, _ = small_features()
    ref = brute_force_jaccard(x, k1, k2)
    dense = compute_jaccard_distance_dense(x, k1, k2)
    sparse = compute_jaccard_distance_sparse(x, k1, k2)
    np.testing.assert_allclose(dense, ref, atol=1e-5)
    stored = sparse.tocoo()
    np.testing.assert_allclose(stored.data, ref[stored.row, stored.col], atol=1e-5)
    absent = np.ones_like(ref, bool)
    absent[stored.row, stored.col] = False
    assert (ref[absent] >= 1 - 1e-6).all()
    assert absent.sum() > 0  # the sparse matrix really is sparse
    assert (sparse != sparse.T).nnz == 0


def test_sparse_chunking_does_not_change_the_result():
    x, _ = make_clustered_features(800, 32, seed=3)
    one = compute_jaccard_distance_sparse(x, 20, 6)
    many = compute_jaccard_distance_sparse(x, 20, 6, max_pairs_per_chunk=5000)
    assert (one != many).nnz == 0


def test_dbscan_sparse_equals_sklearn_labels_exactly():
    x, _ = make_clustered_features(1500, 64, seed=4, max_cluster_size=120)
    sparse = compute_jaccard_distance_sparse(x, 20, 6)
    dense = compute_jaccard_distance_dense(x, 20, 6)
    for eps, min_samples in [(0.5, 4), (0.6, 4), (0.3, 2), (0.7, 8)]:
        ours = dbscan_precomputed_sparse(sparse, eps, min_samples)
        ref = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dense)
        assert np.array_equal(ours, ref), (eps, min_samples)


def test_dbscan_recovers_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.linalg.qr(rng.standard_normal((32, 32)))[0][:6]
    labels = np.repeat(np.arange(6), [5, 8, 12, 20, 30, 6])
    x = centres[labels] + 0.02 * rng.standard_normal((len(labels), 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dist = compute_jaccard_distance_sparse(x.astype(np.float32), 10, 3)
    pred = dbscan_precomputed_sparse(dist, 0.6, 4)
    kept = pred >= 0
    assert kept.mean() > 0.9
    assert len(set(pred[kept])) == 6
    assert adjusted_rand_score(labels[kept], pred[kept]) == 1.0


def test_relabel_consecutive_keeps_order_and_outliers():
    out, c = relabel_consecutive(np.array([5, -1, 2, 5, 9]))
    assert c == 3 and out.tolist() == [1, -1, 0, 1, 2]


def cluster_cfg(*opts):
    return setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.K1", "20", "CLUSTER.K2", "6", *opts])


def test_clusterer_labels_do_not_depend_on_bf16_screening():
    # no (near-)duplicates: their scores tie at float32 resolution, where any order is right
    x, _ = make_clustered_features(1500, 64, seed=6, exact_dup_frac=0.0, near_dup_frac=0.0)
    screened = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.55"))(x)
    plain = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.55", "CLUSTER.KNN_BF16_SCREEN", "False"))(x)
    assert screened.num_clusters > 20
    assert np.array_equal(screened.labels, plain.labels)


def test_clusterer_sparse_and_dense_give_identical_labels():
    x, truth = make_clustered_features(1200, 64, seed=5)
    sparse = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.55"))(x)
    dense = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.55", "CLUSTER.JACCARD", "dense"))(x)
    assert np.array_equal(sparse.labels, dense.labels)
    assert sparse.num_clusters > 10
    assert adjusted_rand_score(truth[truth >= 0], sparse.labels[truth >= 0]) > 0.5
    assert set(sparse.seconds) >= {"knn", "jaccard", "dbscan", "total"}
    assert 0.0 <= sparse.distance_stats["nn_median"] <= 1.0


def test_clusterer_rejects_bad_features():
    clusterer = build_clusterer(cluster_cfg())
    with pytest.raises(ClusteringError, match="NaN"):
        clusterer(torch.full((10, 4), float("nan")))
    for bad in (float("nan"), float("inf"), -float("inf")):  # one bad value among good rows
        feats = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
        feats[7, 2] = bad
        with pytest.raises(ClusteringError, match="NaN or Inf"):
            clusterer(feats)
    with pytest.raises(ClusteringError, match="empty"):
        clusterer(np.zeros((0, 4), np.float32))


def dense_reference_jaccard(x: np.ndarray, k1: int, k2: int, order: Optional[np.ndarray] = None) -> np.ndarray:
    """The same definition as :func:`brute_force_jaccard`, vectorised with dense N x N arrays (N of thousands).

    ``order`` (N x >= k1 neighbour lists, self first) replaces the float64 ranking: with
    near-duplicates, scores tie at float32 resolution and any order among them is right
    (the k-NN search is checked on its own, by ``assert_exact_topk``).
    """
    n = len(x)
    sim = x.astype(np.float64) @ x.astype(np.float64).T
    if order is None:
        key = -sim
        np.fill_diagonal(key, -np.inf)  # the point itself first
        order = np.argsort(key, axis=1, kind="stable")

    def first(k):
        m = np.zeros((n, n), bool)
        np.put_along_axis(m, order[:, :k], True, axis=1)
        return m

    r_full = first(k1) & first(k1).T
    r_half = first(int(round(k1 / 2)) + 1)
    r_half &= r_half.T
    overlap = r_full.astype(np.float64) @ r_half.T.astype(np.float64)  # set sizes: exact in float64
    accept = r_full & (overlap > 2 / 3 * r_half.sum(1)[None, :])
    star = r_full | ((accept.astype(np.float64) @ r_half.astype(np.float64)) > 0)
    v = np.where(star, np.exp(-(2 - 2 * sim)), 0.0)
    v /= v.sum(1, keepdims=True)
    vq = first(k2).astype(np.float64) @ v / k2
    dist = np.ones((n, n))
    for i in range(n):
        support = np.flatnonzero(vq[i])
        m = np.minimum(vq[i, support][None, :], vq[:, support]).sum(1)
        dist[i] = 1 - m / (2 - m)
    return np.maximum(dist, 0)


def test_sparse_path_matches_dense_reference_on_thousands_of_hard_features():
    # very different cluster sizes, correlated clusters, near-duplicates, outliers. Exact duplicates
    # are left out here: they tie in the k-NN order, which the definition leaves free (the sparse and
    # dense paths share one k-NN list and are compared with exact duplicates above).
    x, _ = make_clustered_features(2000, 64, seed=11, max_cluster_size=400, near_dup_frac=0.05,
                                   exact_dup_frac=0.0, outlier_frac=0.08)
    knn = knn_search(x, 30)
    assert_exact_topk(x, *knn)
    ref = dense_reference_jaccard(x, 30, 6, order=knn[1])
    sparse = compute_jaccard_distance_sparse(x, 30, 6, knn=knn)
    stored = sparse.tocoo()
    np.testing.assert_allclose(stored.data, ref[stored.row, stored.col], atol=1e-5)
    absent = np.ones_like(ref, bool)
    absent[stored.row, stored.col] = False
    assert (ref[absent] >= 1 - 1e-6).all()
    for eps in (0.45, 0.6):
        ours = dbscan_precomputed_sparse(sparse, eps, 4)
        theirs = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(ref)
        assert adjusted_rand_score(theirs, ours) == 1.0
        assert len(set(ours)) > 20


def test_knn_rejects_non_finite_features():
    x = np.ones((5, 4), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ClusteringError, match="NaN or Inf"):
        knn_search(x, 3)


def test_descending_key_orders_floats_like_a_stable_sort():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(500).astype(np.float32),
                             np.array([0.0, -0.0, 1.0, 1.0, -1.0, 3e38, -3e38, 1e-45, -1e-45], np.float32)])
    rng.shuffle(values)
    expected = np.argsort(-values, kind="stable")  # treats -0.0 and 0.0 as equal, keeps their order
    assert np.array_equal(np.argsort(_descending_key(values), kind="stable"), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_clusterer_on_gpu_features_matches_cpu_labels():
    feats, _ = make_clustered_features(3000, 64, seed=5)
    cfg = setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.EPS", "0.6"])
    on_cpu = build_clusterer(cfg)(feats)
    on_gpu = build_clusterer(cfg)(torch.from_numpy(feats).cuda())  # what the clustering hook passes on a GPU
    assert on_gpu.num_clusters > 10
    assert adjusted_rand_score(on_cpu.labels, on_gpu.labels) > 0.99


def test_jaccard_graph_holds_exactly_the_pairs_within_the_bound_and_exact_nearest_distances():
    x, _ = make_clustered_features(1200, 64, seed=7, max_cluster_size=150)
    clusterer = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.5"))
    full = compute_jaccard_distance_dense(x, 20, 6)  # the published path, every pair
    off = full.copy()
    np.fill_diagonal(off, np.inf)
    nearest_ref = np.minimum(off.min(1), 1.0)
    for bound in (None, 0.3, 0.7):
        graph = clusterer.jaccard_graph(x, bound=bound)
        limit = 0.5 if bound is None else bound
        assert graph.bound == limit
        stored = graph.dist.tocoo()
        within = np.argwhere(full <= limit)
        assert graph.dist.nnz == len(within)
        assert np.array_equal(np.sort(stored.row * len(x) + stored.col), np.sort(within[:, 0] * len(x) + within[:, 1]))
        assert np.array_equal(stored.data, full[stored.row, stored.col])  # bit-identical to the dense values
        assert (graph.dist != graph.dist.T).nnz == 0
        assert np.array_equal(graph.nearest, nearest_ref.astype(np.float32))
        assert (graph.nearest > limit).any()  # exact above the bound too, not cut at it
        assert {"knn", "jaccard", "jaccard_min_sum"} <= set(graph.seconds)


def test_cluster_graph_at_any_eps_up_to_the_bound_equals_a_fresh_clustering():
    x, _ = make_clustered_features(1500, 64, seed=8, max_cluster_size=120)
    clusterer = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.6"))
    graph = clusterer.jaccard_graph(x)
    dense = compute_jaccard_distance_dense(x, 20, 6)
    for eps in (0.4, 0.5, 0.6):
        swept = clusterer.cluster_graph(graph, eps)
        fresh = build_clusterer(cluster_cfg("CLUSTER.EPS", str(eps)))(x)
        ref = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(dense)
        assert np.array_equal(swept.labels, fresh.labels)
        assert np.array_equal(swept.labels, relabel_consecutive(ref)[0])
        assert swept.num_clusters > 10
        assert swept.distance_stats == fresh.distance_stats
    with pytest.raises(ValueError, match="bound"):
        clusterer.cluster_graph(graph, 0.65)


def test_dense_and_sparse_jaccard_graphs_are_equal():
    x, _ = make_clustered_features(900, 32, seed=9)
    sparse = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.55")).jaccard_graph(x)
    dense = build_clusterer(cluster_cfg("CLUSTER.EPS", "0.55", "CLUSTER.JACCARD", "dense")).jaccard_graph(x)
    assert (sparse.dist != dense.dist).nnz == 0 and sparse.dist.nnz == dense.dist.nnz
    assert np.array_equal(sparse.nearest, dense.nearest)


def test_infomap_recovers_clusters_and_makes_singletons_outliers():
    x, truth = make_clustered_features(2000, 64, seed=12, outlier_frac=0.05)
    cfg = cluster_cfg("CLUSTER.NAME", "infomap")
    result = build_clusterer(cfg)(x)
    inliers = truth >= 0
    assert adjusted_rand_score(truth[inliers], result.labels[inliers]) > 0.95
    sizes = np.bincount(result.labels[result.labels >= 0])
    assert sizes.min() >= 2 and len(sizes) == result.num_clusters  # no singleton cluster, ids 0..C-1
    assert (result.labels[~inliers] == -1).mean() > 0.5  # random directions: mostly outliers
    assert result.num_outliers == int((result.labels < 0).sum())
    again = build_clusterer(cfg)(x)
    assert np.array_equal(again.labels, result.labels)  # seeded by SEED


def test_infomap_links_respect_min_sim_and_min_size_makes_outliers():
    from hhcl_plugin.clustering import build_knn_graph
    from hhcl_plugin.clustering.infomap_clusterer import knn_link_matrix, small_modules_as_outliers

    x, _ = make_clustered_features(300, 16, seed=13)
    graph = build_knn_graph(x, 8)
    links = knn_link_matrix(graph, 0.6).tocoo()
    sims = x @ x.T
    assert links.nnz > 0 and (links.row != links.col).all()
    np.testing.assert_allclose(links.data, sims[links.row, links.col], atol=1e-5)
    assert (links.data >= 0.6).all()
    expected = sum(int(((graph.sims[i, 1:] >= 0.6) & (graph.idx[i, 1:] != i)).sum()) for i in range(len(x)))
    assert links.nnz == expected
    modules = np.array([3, 3, 7, 5, 5, 5, 9])
    assert small_modules_as_outliers(modules, 2).tolist() == [3, 3, -1, 5, 5, 5, -1]
    assert small_modules_as_outliers(modules, 3).tolist() == [-1, -1, -1, 5, 5, 5, -1]


def test_candidate_pool_keeps_pairs_by_both_thresholds_beyond_16_bit_block_starts():
    """Pairs are stored as 16-bit offsets into their blocks; the blocks may start anywhere."""
    from hhcl_plugin.clustering.knn import _CandidatePool

    n, a, b = 200_000, 70_000, 140_000
    keep_keys = np.zeros(n, np.int16)
    keep_keys[a:a + 3] = [10, 20, 30]  # thresholds of rows a, a+1, a+2
    keep_keys[b:b + 3] = [5, 50, 500]  # and of columns b, b+1, b+2
    pool = _CandidatePool(n)
    r, c = np.array([0, 1, 2]), np.array([0, 1, 2])
    # pair 0 passes both, pair 1 only its column's (as a row candidate it was never flagged), pair 2 neither
    pool.add(a, b, r, c, np.array([40, 60, 25], np.int16), np.array([3, 2, 3], np.uint8), lambda: keep_keys)
    pool.prune(keep_keys)
    kept_r, kept_c, kept_keys, kept_flags = pool.parts[(a, b)]
    assert kept_r.tolist() == [0, 1] and kept_c.tolist() == [0, 1]
    assert kept_flags.tolist() == [3, 2] and pool.size == 2
    pool.rescore(torch.eye(n, 4), keep_keys, bs=3)
    local_rows, cols, _ = pool.candidates_of_rows(a, [a, b])
    assert local_rows.tolist() == [0] and cols.tolist() == [b]


def test_self_is_put_first_the_same_in_any_chunking():
    """Lists that miss their point, list it late, or have empty (-1) slots, across chunk edges."""
    from hhcl_plugin.clustering.knn import _put_self_first

    rng = np.random.default_rng(5)
    n, k = 50, 6
    x = torch.nn.functional.normalize(torch.randn(n, 8), dim=1)
    idx = np.stack([rng.choice(n, k, replace=False) for _ in range(n)]).astype(np.int64)
    idx[::3, 2] = np.arange(0, n, 3)  # listed third
    idx[::7, -1] = -1  # an empty slot
    sims = rng.random((n, k)).astype(np.float32)
    whole = _put_self_first(x, sims.copy(), idx.copy(), rows_per_chunk=n)
    chunked = _put_self_first(x, sims.copy(), idx.copy(), rows_per_chunk=7)
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_array_equal(whole[0], chunked[0])
    assert (whole[1][:, 0] == np.arange(n)).all()
    for i in range(n):  # the other neighbours keep their order
        others = [j for j in idx[i] if j not in (i, -1)][:k - 1]
        assert [j for j in whole[1][i, 1:] if j != -1] == others
