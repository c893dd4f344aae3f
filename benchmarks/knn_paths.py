"""Every exact k-NN path on the clustering benchmark's features: identical lists, and seconds per path.

The paths a machine can take (plain float32 blocks, the bfloat16-screened search with
the CPU's bfloat16 units where it has them and emulated, the sharded search of 1-3
ranks run one after another in this process) search the same seeded features of
``benchmarks/clustering.py`` (``--regime``); each path's neighbour lists and scores are
compared with those of the plain float32 blocks.

Usage::

    python benchmarks/knn_paths.py --n 12936 --regime tight
    python benchmarks/knn_paths.py --n 12936 --regime mixed
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.clustering import REGIMES  # noqa: E402
from hhcl_plugin.clustering import build_knn_graph  # noqa: E402
from hhcl_plugin.testing.synthetic_features import make_clustered_features  # noqa: E402
from hhcl_plugin.clustering.distributed import shard_bounds  # noqa: E402
from hhcl_plugin.clustering.knn import (  # noqa: E402
    BF16_SCREEN_ENV,
    _put_self_first,
    cpu_has_bf16_matmul,
    knn_rows,
    prepare_features,
)

Lists = Tuple[np.ndarray, np.ndarray]


def with_switch(mode: str, k: int, block_size: int) -> Callable[[np.ndarray], Lists]:
    def run(x: np.ndarray) -> Lists:
        os.environ[BF16_SCREEN_ENV] = mode
        try:
            graph = build_knn_graph(x, k, block_size=block_size)
        finally:
            os.environ.pop(BF16_SCREEN_ENV, None)
        return graph.sims, graph.idx
    return run


def sharded(world: int, k: int, block_size: int) -> Callable[[np.ndarray], Lists]:
    def run(x: np.ndarray) -> Lists:
        xt = prepare_features(x)
        bounds = shard_bounds(len(xt), world, block_size)
        parts = [knn_rows(xt, k, slice(int(bounds[r]), int(bounds[r + 1])), block_size=block_size)
                 for r in range(world)]
        return _put_self_first(xt, *(np.concatenate(p) for p in zip(*parts)))
    return run


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=12936)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--regime", choices=tuple(REGIMES), default="mixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k1", type=int, default=30, help="k-reciprocal k1; the k-NN lists hold k1 + 1")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--max-ranks", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    feats, _ = make_clustered_features(args.n, args.dim, seed=args.seed, **REGIMES[args.regime])
    k, bs = args.k1 + 1, args.block_size
    paths: Dict[str, Callable[[np.ndarray], Lists]] = {"float32 blocks (HHCL_KNN_BF16=off)": with_switch("off", k, bs)}
    if cpu_has_bf16_matmul():
        paths["bf16 screen, hardware (auto)"] = with_switch("auto", k, bs)
    paths["bf16 screen, emulated (emulate)"] = with_switch("emulate", k, bs)
    for world in range(1, args.max_ranks + 1):
        paths[f"sharded, {world} rank(s)"] = sharded(world, k, bs)
    rows, ref = [], None
    for name, run in paths.items():
        start = time.perf_counter()
        sims, idx = run(feats)
        seconds = time.perf_counter() - start
        if ref is None:
            ref = (sims, idx)
        rows.append([name, seconds, int((idx != ref[1]).any(1).sum()), int((sims != ref[0]).sum()),
                     bool(np.array_equal(idx, ref[1]) and np.array_equal(sims, ref[0]))])
    print(f"exact k-NN paths, N={args.n}, D={args.dim}, k={k}, {args.regime} regime, "
          f"{torch.get_num_threads()} threads; lists against the float32 blocks'")
    print(tabulate(rows, headers=["path", "seconds", "rows differing", "scores differing", "identical"],
                   floatfmt=".2f"))
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
