"""Clustering cost: the project's clusterers against the dense published pipeline, in one run.

Each measurement runs in its own process, so its peak resident memory is its own: the
parent starts one worker per (size, implementation), the worker generates the same
seeded clustered features (``make_clustered_features``), runs the whole clustering and
reports seconds per stage, peak RSS and its labels.  Implementations:

* ``sparse``: ``dbscan_jaccard`` with the defaults (k-NN graph, sparse Jaccard graph
  within eps, sparse DBSCAN);
* ``dense``: the published pipeline, the reference: float32 k-NN (faiss ``IndexFlatIP``
  on CPU, as the official code), dense N x N Jaccard matrix, scikit-learn DBSCAN.  It
  needs ~3 N^2 float32 and runs only up to ``--reference-max``; the other labels are
  compared with its labels wherever both ran;
* ``infomap`` (``--infomap``): ``CLUSTER.NAME infomap`` on the same features;
* ``products``: plain float32 and bfloat16 matrix products of the k-NN's total size
  (the symmetric half of N x N x D, in the k-NN's blocks), the speed limit of the k-NN.

Regimes (``--regime``): ``mixed`` (default) has clusters of very different sizes,
outliers and near-duplicates, like early training; ``tight`` has tight clusters of ~17
images and nothing else, like a well-trained model late in training.

Usage::

    python benchmarks/clustering.py --sizes 32621 100000 --dim 2048 --reference-max 32621 --json out.json
    python benchmarks/clustering.py --sizes 32621 --regime tight --infomap
    python benchmarks/clustering.py --sizes 12936 32621 --repeats 3   # medians, implementations in turn
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("benchmarks.clustering")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Start the peak-RSS count now (Linux ``clear_refs``) and return the current RSS in MB.

    The clustering receives its features in memory, as in training; the temporaries of
    generating synthetic ones are not part of what is measured.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux, or not permitted: the peak then includes set-up
        logger.warning("cannot reset the peak RSS; it includes feature generation")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    try:
        return _status_mb("VmHWM")
    except (OSError, RuntimeError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


REGIMES = {
    "mixed": {},
    "tight": dict(mean_cluster_size=17, max_cluster_size=60, outlier_frac=0.0, near_dup_frac=0.0, exact_dup_frac=0.0,
                  spread=(0.35, 0.5), group_weight=0.9, group_size=16),
}


def reference_clustering(feats: np.ndarray, args: argparse.Namespace) -> Dict:
    """The published pipeline: faiss float32 k-NN, dense Jaccard matrix, scikit-learn DBSCAN."""
    import faiss
    import torch
    from sklearn.cluster import DBSCAN

    from hhcl_plugin.clustering import compute_jaccard_distance_dense
    from hhcl_plugin.clustering.knn import _put_self_first

    start = time.perf_counter()
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    sims, idx = _put_self_first(torch.from_numpy(feats), *index.search(feats, args.k1))
    del index
    t_knn = time.perf_counter()
    dist = compute_jaccard_distance_dense(feats, args.k1, args.k2, knn=(sims, idx))
    t_jaccard = time.perf_counter()
    labels = DBSCAN(eps=args.eps, min_samples=args.min_samples, metric="precomputed", n_jobs=-1).fit_predict(dist)
    end = time.perf_counter()
    return {"labels": labels, "n_clusters": int(labels.max()) + 1,
            "stages": {"knn": t_knn - start, "jaccard": t_jaccard - t_knn, "dbscan": end - t_jaccard}}


def product_seconds(feats: np.ndarray, block_size: int = 2048) -> Dict:
    """Seconds of plain float32 and bfloat16 products over the k-NN's block pairs (J >= I)."""
    import torch

    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        x = torch.from_numpy(feats).to(dtype)
        starts = range(0, len(x), block_size)
        start = time.perf_counter()
        with torch.no_grad():
            for a in starts:
                for b in starts:
                    if b >= a:
                        x[a:a + block_size] @ x[b:b + block_size].T
        out[name] = time.perf_counter() - start
    return {"labels": None, "n_clusters": None, "stages": out}


def worker(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON row on stdout and saves the labels."""
    import torch

    from hhcl_plugin.clustering import build_clusterer
    from hhcl_plugin.testing.synthetic_features import make_clustered_features
    from hhcl_plugin.config import setup_cfg

    torch.set_num_threads(os.cpu_count() or 1)
    feats, _ = make_clustered_features(args.n, args.dim, seed=args.seed, **REGIMES[args.regime])
    baseline_mb = reset_peak_rss()
    start = time.perf_counter()
    if args.impl == "dense":
        found = reference_clustering(feats, args)
    elif args.impl == "products":
        found = product_seconds(feats)
    else:
        cfg = setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.NAME",
                             "infomap" if args.impl == "infomap" else "dbscan_jaccard",
                             "CLUSTER.K1", str(args.k1), "CLUSTER.K2", str(args.k2), "CLUSTER.EPS", str(args.eps),
                             "CLUSTER.MIN_SAMPLES", str(args.min_samples)])
        result = build_clusterer(cfg)(feats)
        found = {"labels": result.labels, "n_clusters": result.num_clusters, "stages": result.seconds}
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    if found["labels"] is not None:
        np.save(args.labels_out, found["labels"])
    print(json.dumps({"n": args.n, "impl": args.impl, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1),
                      "baseline_rss_mb": round(baseline_mb, 1), "n_clusters": found["n_clusters"],
                      "stages": {k: round(v, 2) for k, v in found["stages"].items()}}))


def run_one(args: argparse.Namespace, n: int, impl: str, labels_out: str) -> Optional[Dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--n", str(n), "--impl", impl, "--regime", args.regime,
           "--dim", str(args.dim), "--seed", str(args.seed), "--k1", str(args.k1), "--k2", str(args.k2),
           "--eps", str(args.eps), "--min-samples", str(args.min_samples), "--labels-out", labels_out]
    logger.info("running %s N=%d ...", impl, n)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        logger.error("%s N=%d failed (exit %d): %s", impl, n, proc.returncode, proc.stderr.strip()[-500:])
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    logger.info("%s N=%d: %.1fs, peak %.0f MB, %s clusters", impl, n, row["seconds"], row["peak_rss_mb"],
                row["n_clusters"])
    return row


def _median_row(n: int, impl: str, runs: List[Dict]) -> Dict:
    """One row per (N, implementation): the median run (its stages), median peaks, every run's seconds."""
    if not runs:
        return {"n": n, "impl": impl, "seconds": None, "peak_rss_mb": None, "baseline_rss_mb": None,
                "n_clusters": None}
    row = dict(sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2])  # the median run's stages
    for key in ("seconds", "peak_rss_mb", "baseline_rss_mb"):
        row[key] = statistics.median(r[key] for r in runs)
    row["seconds_runs"] = [r["seconds"] for r in runs]
    return row


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12936, 32621])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--regime", choices=tuple(REGIMES), default="mixed", help="feature generator (see above)")
    parser.add_argument("--reference-max", type=int, default=32621, help="largest N for the dense reference")
    parser.add_argument("--infomap", action="store_true", help="also run CLUSTER.NAME infomap")
    parser.add_argument("--json", default="", help="write the rows to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement (medians reported)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("products", "sparse", "dense", "infomap"), help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from sklearn.metrics import adjusted_rand_score

    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            impls = (["products", "sparse"] + (["dense"] if n <= args.reference_max else [])
                     + (["infomap"] if args.infomap else []))
            runs: Dict[str, List[Dict]] = {impl: [] for impl in impls}
            labels = {}
            for _ in range(args.repeats):  # in turn, so that drifting machine speed hits all of them
                for impl in impls:
                    path = os.path.join(tmp, f"{impl}_{n}.npy")
                    row = run_one(args, n, impl, path)
                    if row is not None:
                        runs[impl].append(row)
                        if os.path.exists(path):
                            labels[impl] = np.load(path)
            by_impl = {impl: _median_row(n, impl, runs[impl]) for impl in impls}
            for impl, row in by_impl.items():
                if impl in labels and "dense" in labels and impl != "dense":
                    row["ari_vs_dense"] = float(adjusted_rand_score(labels["dense"], labels[impl]))
                    row["labels_identical"] = bool(np.array_equal(labels["dense"], labels[impl]))
                if runs.get("dense") and runs[impl] and impl not in ("dense", "products"):
                    row["dense_peak_rss_mb"] = by_impl["dense"]["peak_rss_mb"]
                    row["speedup_median"] = statistics.median(
                        d["seconds"] / s["seconds"] for s, d in zip(runs[impl], runs["dense"]))
            rows.extend(by_impl.values())
    print(f"clustering, {args.regime} regime: k-NN + k-reciprocal Jaccard (k1={args.k1}, k2={args.k2}) + DBSCAN "
          f"(eps={args.eps}, min_samples={args.min_samples}), D={args.dim}, {os.cpu_count()} CPU cores; peak RSS "
          f"counted from the start of the clustering, baseline = RSS then (libraries + features); medians of "
          f"{args.repeats} run(s) each, implementations in turn; speed-up = median of the per-run ratios to dense")
    print(tabulate([_table_row(r) for r in rows if r["impl"] != "products"],
                   headers=["N", "impl", "seconds", "k-NN s", "Jaccard s", "DBSCAN / InfoMap s", "peak MB",
                            "baseline MB", "speed-up", "peak ratio", "clusters", "ARI vs dense", "identical"],
                   floatfmt=".2f"))
    knn_rows = [(r, p) for r in rows if r["impl"] == "sparse" and r.get("stages")
                for p in rows if p["impl"] == "products" and p["n"] == r["n"] and p.get("stages")]
    if knn_rows:
        print("\nk-NN against plain products of its size (the symmetric half of N x N x D, 2048-row blocks)")
        print(tabulate([[r["n"], r["stages"]["knn"], p["stages"]["float32"], p["stages"]["bfloat16"],
                         r["stages"]["knn"] / p["stages"]["float32"], r["stages"]["knn"] / p["stages"]["bfloat16"]]
                        for r, p in knn_rows],
                       headers=["N", "k-NN s", "float32 product s", "bfloat16 product s", "k-NN / float32",
                                "k-NN / bfloat16"], floatfmt=".2f"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def _table_row(row: Dict) -> List:
    stages = row.get("stages") or {}
    dense = row.get("dense_peak_rss_mb")
    return [row["n"], row["impl"], row.get("seconds"), stages.get("knn"), stages.get("jaccard"),
            stages.get("dbscan", stages.get("infomap")), row.get("peak_rss_mb"), row.get("baseline_rss_mb"),
            f"{row['speedup_median']:.1f}x" if row.get("speedup_median") else "-",
            f"{dense / row['peak_rss_mb']:.1f}x" if dense and row.get("peak_rss_mb") else "-",
            row.get("n_clusters"), row.get("ari_vs_dense", "-"), row.get("labels_identical", "-")]


if __name__ == "__main__":
    sys.exit(main())
