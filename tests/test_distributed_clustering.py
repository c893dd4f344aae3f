"""The k-NN sharded over DDP ranks (gloo, two CPU processes): the same graph and labels as one process."""
import os

import numpy as np
import torch
import torch.distributed as dist
from test_distributed import join_group, spawn

from hhcl_plugin.clustering import build_clusterer, build_knn_graph, cluster_on_all_ranks
from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.clustering.distributed import shard_bounds, sharded_knn_graph
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.utils import comm

OPTS = ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.K1", "20", "CLUSTER.K2", "6", "CLUSTER.EPS", "0.55"]


def features():
    # no (near-)duplicates: their scores tie at float32 resolution, where any order is right
    x, _ = make_clustered_features(2500, 48, seed=21, exact_dup_frac=0.0, near_dup_frac=0.0)
    return x


def cluster_worker(rank, world, port, out):
    join_group(rank, world, port)
    x = features()
    graph = sharded_knn_graph(x, 20, rank=rank, world=world, gather=comm.all_gather_tensor, block_size=512)
    results = {name: cluster_on_all_ranks(build_clusterer(setup_cfg("", OPTS + ["CLUSTER.NAME", name])), x)
               for name in ("dbscan_jaccard", "infomap")}
    torch.save({"idx": graph.idx, "sims": graph.sims,
                "labels": {k: None if r is None else r.labels for k, r in results.items()}},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_sharded_knn_and_labels_equal_one_process(tmp_path):
    spawn(cluster_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    x = features()
    one = build_knn_graph(x, 20)  # one process: the symmetric (screened) search
    for got in ranks:  # every rank holds the gathered graph
        assert np.array_equal(got["idx"], one.idx)
        assert np.array_equal(got["sims"], one.sims)
    for name in ("dbscan_jaccard", "infomap"):
        alone = build_clusterer(setup_cfg("", OPTS + ["CLUSTER.NAME", name]))(x)
        assert alone.num_clusters > 20
        assert np.array_equal(ranks[0]["labels"][name], alone.labels), name
        assert ranks[1]["labels"][name] is None  # only rank 0 clusters


def test_shards_split_at_block_boundaries_and_cover_every_row():
    bounds = shard_bounds(5000, 3, 512)
    assert bounds[0] == 0 and bounds[-1] == 5000
    assert all(b % 512 == 0 for b in bounds[:-1]) and np.all(np.diff(bounds) > 0)
    assert shard_bounds(100, 4, 512).tolist() == [0, 0, 0, 100, 100]  # fewer blocks than ranks: empty shards
