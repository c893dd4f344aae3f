"""Every exact k-NN path gives the same lists, on any CPU, with any thread count.

The paths (plain float32 blocks, the bfloat16-screened search with emulated and, where
the CPU has it, hardware bfloat16, the sharded search) are forced by their own switch
(``HHCL_KNN_BF16``, ``screen=False``, the shard bounds), so each runs on every machine;
their lists are compared with each other and with a float64 reference.
"""
import numpy as np
import pytest
import torch

from hhcl_plugin.clustering import build_knn_graph
from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.clustering.distributed import shard_bounds
from hhcl_plugin.clustering.knn import (
    BF16_SCREEN_ENV,
    _put_self_first,
    _screened_topk,
    bf16_screen_mode,
    cpu_has_bf16_matmul,
    float32_score_error,
    knn_rows,
    order_by_row_score_index,
    pair_inner_products,
    prepare_features,
    rescore_top_k,
)
from hhcl_plugin.utils.errors import ConfigError


def hard_features():
    """Clusters of very different sizes, outliers, near-duplicates and exact duplicates."""
    x, _ = make_clustered_features(1500, 64, seed=11, mean_cluster_size=12, near_dup_frac=0.1, exact_dup_frac=0.05)
    return x


def tied_features():
    """Groups of exact copies larger than k plus its spare candidates: every score in a group ties."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((40, 24)).astype(np.float32)
    x = np.repeat(base, [60] + [3] * 39, axis=0)
    x = x[rng.permutation(len(x))]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sharded(x, k, world, block_size):
    """The sharded search of ``world`` ranks, run one rank after another in this process."""
    xt = prepare_features(x)
    bounds = shard_bounds(len(xt), world, block_size)
    parts = [knn_rows(xt, k, slice(int(bounds[r]), int(bounds[r + 1])), block_size=block_size) for r in range(world)]
    sims, idx = (np.concatenate(p) for p in zip(*parts))
    return _put_self_first(xt, sims, idx)


def every_path(x, k, block_size, monkeypatch):
    """``{path name: (sims, idx)}`` of every exact CPU path this machine can run."""
    found = {}
    monkeypatch.setenv(BF16_SCREEN_ENV, "off")
    found["float32 blocks"] = build_knn_graph(x, k, block_size=block_size)
    found["screen=False"] = build_knn_graph(x, k, block_size=block_size, screen=False)
    monkeypatch.setenv(BF16_SCREEN_ENV, "emulate")
    found["bf16 screen, emulated"] = build_knn_graph(x, k, block_size=block_size)
    if cpu_has_bf16_matmul():
        monkeypatch.setenv(BF16_SCREEN_ENV, "auto")
        found["bf16 screen, hardware"] = build_knn_graph(x, k, block_size=block_size)
    monkeypatch.delenv(BF16_SCREEN_ENV)
    found = {name: (g.sims, g.idx) for name, g in found.items()}
    for world in (1, 2, 3):
        found[f"sharded, {world} ranks"] = sharded(x, k, world, block_size)
    return found


def assert_float64_top_k(x, sims, idx):
    """The lists hold a float64 top-k, scores within float32 rounding, ordered by score then index."""
    x64 = x.astype(np.float64)
    full = x64 @ x64.T
    tol = 2 * float32_score_error(torch.from_numpy(x))
    n, k = idx.shape
    assert (idx[:, 0] == np.arange(n)).all()
    assert (np.sort(idx, 1)[:, 1:] != np.sort(idx, 1)[:, :-1]).all(), "a neighbour listed twice"
    listed = np.take_along_axis(full, idx, 1)
    np.testing.assert_allclose(sims, listed, rtol=0, atol=tol)
    left_out = full.copy()
    np.put_along_axis(left_out, idx, -np.inf, 1)
    assert (left_out.max(1) <= listed[:, 1:].min(1) + 2 * tol).all(), "a closer point was left out"
    step = np.diff(sims[:, 1:], axis=1)
    assert (step <= 0).all(), "neighbours not in decreasing score"
    tie = step == 0
    assert (np.diff(idx[:, 1:], axis=1)[tie] > 0).all(), "tied neighbours not in increasing index"


@pytest.mark.parametrize("features,k,block_size", [(hard_features, 31, 256), (tied_features, 20, 64)],
                         ids=["clustered", "tied"])
def test_every_exact_path_gives_the_same_lists_as_float64(features, k, block_size, monkeypatch):
    x = features()
    found = every_path(x, k, block_size, monkeypatch)
    ref_sims, ref_idx = found["float32 blocks"]
    for name, (sims, idx) in found.items():
        assert np.array_equal(idx, ref_idx), name
        assert np.array_equal(sims, ref_sims), name
    assert_float64_top_k(x, ref_sims, ref_idx)


def test_listed_scores_are_the_public_pair_scores(monkeypatch):
    x = hard_features()
    found = every_path(x, 15, 256, monkeypatch)
    xt = torch.from_numpy(x)
    for name, (sims, idx) in found.items():
        rows = np.repeat(np.arange(len(x)), idx.shape[1])
        assert np.array_equal(sims.ravel(), pair_inner_products(xt, rows, idx.ravel())), name


def test_lists_do_not_depend_on_the_thread_count(monkeypatch):
    x = hard_features()
    before = torch.get_num_threads()
    monkeypatch.setenv(BF16_SCREEN_ENV, "off")
    try:
        torch.set_num_threads(1)
        one = build_knn_graph(x, 31, block_size=256)
        torch.set_num_threads(2)
        two = build_knn_graph(x, 31, block_size=256)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one.idx, two.idx) and np.array_equal(one.sims, two.sims)


def test_the_switch_forces_each_cpu_path(monkeypatch):
    xt = prepare_features(hard_features()[:300])
    monkeypatch.setenv(BF16_SCREEN_ENV, "off")
    assert bf16_screen_mode() == "off" and _screened_topk(xt, 10) is None
    monkeypatch.setenv(BF16_SCREEN_ENV, "emulate")
    assert bf16_screen_mode() == "emulate" and _screened_topk(xt, 10) is not None
    monkeypatch.setenv(BF16_SCREEN_ENV, "auto")
    assert bf16_screen_mode() == ("hardware" if cpu_has_bf16_matmul() else "off")
    monkeypatch.setenv(BF16_SCREEN_ENV, "fast")
    with pytest.raises(ConfigError, match=BF16_SCREEN_ENV):
        bf16_screen_mode()


def test_order_is_score_descending_then_index_ascending():
    rows = np.array([1, 0, 0, 0, 1, 0, 0])
    scores = np.array([0.5, 0.25, 0.75, 0.25, 0.5, 0.0, -0.0], np.float32)
    cols = np.array([9, 7, 3, 2, 4, 6, 5])
    order = order_by_row_score_index(rows, scores, cols)
    assert cols[order].tolist() == [3, 2, 7, 5, 6, 4, 9]  # -0.0 ties with 0.0


def test_rescore_top_k_scores_orders_and_pads_candidate_lists():
    x = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    cand = np.array([[5, 3, 5, -1, 7], [2, -1, -1, -1, -1]])
    sims, idx = rescore_top_k(x, np.array([0, 1]), cand, 3)
    assert sorted(idx[0].tolist()) == [3, 5, 7]  # 5 listed twice counts once
    expected = pair_inner_products(x, np.zeros(3, np.int64), idx[0])
    assert np.array_equal(sims[0], expected) and (np.diff(sims[0]) <= 0).all()
    assert idx[1].tolist() == [2, -1, -1] and np.isneginf(sims[1, 1:]).all()


def test_a_wrong_switch_value_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    from hhcl_plugin.tools.train import main

    monkeypatch.setenv(BF16_SCREEN_ENV, "fast")
    out = tmp_path / "out"
    code = main(["DATASETS.NAMES", "('synthreid',)", "DATASETS.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{BF16_SCREEN_ENV}='fast'" in err
    assert not out.exists()
