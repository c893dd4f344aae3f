"""Clustering cost: the project's clusterers against the dense published pipeline, in one run.

Each measurement runs in its own process, so its peak resident memory is its own: the
parent starts one worker per (size, implementation), the worker generates the same
seeded clustered features (``make_clustered_features``), runs the whole clustering and
reports seconds per stage, peak RSS and its labels.  Implementations:

* ``sparse``: ``dbscan_jaccard`` with the exact k-NN (``CLUSTER.KNN_INDEX exact``), sparse
  Jaccard graph within eps, sparse DBSCAN;
* ``ivf`` (``--approx``): the same with the approximate k-NN (``CLUSTER.KNN_INDEX ivf``);
  its k-NN lists' recall is measured on ``--recall-rows`` sampled rows against a
  brute-force search of those rows (after the clustering, outside its time and peak),
  and its labels are compared with the exact search's (``ARI vs exact``);
* ``dense``: the published pipeline, the reference: float32 k-NN (faiss ``IndexFlatIP``
  on CPU, as the official code), dense N x N Jaccard matrix, scikit-learn DBSCAN.  It
  needs ~3 N^2 float32 and runs only up to ``--reference-max``; the other labels are
  compared with its labels wherever both ran;
* ``infomap`` (``--infomap``): ``CLUSTER.NAME infomap`` on the same features;
* ``products``: plain float32 and bfloat16 matrix products of the k-NN's total size
  (the symmetric half of N x N x D, in the k-NN's blocks), the speed limit of the exact
  k-NN.  The bfloat16 product is timed only where the CPU multiplies bfloat16 in
  hardware (or with ``--bf16-products``): elsewhere it is emulated and very slow.

Each size's table is printed as soon as that size is done.

Regimes (``--regime``): ``mixed`` (default) has clusters of very different sizes,
outliers and near-duplicates, like early training; ``tight`` has tight clusters of ~17
images and nothing else, like a well-trained model late in training.

Usage::

    python benchmarks/clustering.py --sizes 32621 100000 --dim 2048 --reference-max 32621 --json out.json
    python benchmarks/clustering.py --sizes 32621 --regime tight --infomap
    python benchmarks/clustering.py --sizes 12936 32621 --repeats 3   # medians, implementations in turn
    python benchmarks/clustering.py --sizes 100000 --approx            # exact and approximate k-NN
    python benchmarks/clustering.py --sizes 1000000 --approx --no-exact --no-products
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
from typing import Dict, List, Optional, Tuple

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


def product_seconds(feats: np.ndarray, bf16: bool, block_size: int = 2048) -> Dict:
    """Seconds of plain float32 (and, with ``bf16``, bfloat16) products over the k-NN's block pairs (J >= I)."""
    import torch

    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))[:2 if bf16 else 1]:
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


def knn_recall(feats: np.ndarray, idx: np.ndarray, rows: int, seed: int,
               block: int = 65536) -> Tuple[np.ndarray, np.ndarray]:
    """The sampled rows and, for each, the share of its true k-NN (brute force, float32) found in ``idx``.

    The true lists come from a search of the sampled rows against every row, a column
    block at a time (the sampled rows' scores are never all held), self included as
    column 0 like the clusterer's lists; ties go to the lower index.
    """
    import torch

    k = idx.shape[1]
    sample = np.sort(np.random.default_rng(seed).choice(len(feats), min(rows, len(feats)), replace=False))
    q = torch.from_numpy(feats[sample])
    best_v = torch.full((len(sample), k), -float("inf"))
    best_i = torch.full((len(sample), k), -1, dtype=torch.int64)
    with torch.no_grad():
        for a in range(0, len(feats), block):
            s = q @ torch.from_numpy(feats[a:a + block]).T
            s[torch.from_numpy(np.flatnonzero((sample >= a) & (sample < a + block))),
              torch.from_numpy(sample[(sample >= a) & (sample < a + block)] - a)] = float("inf")  # self first
            v, i = torch.topk(torch.cat([best_v, s], 1), k, dim=1)
            best_i = torch.gather(torch.cat([best_i, torch.arange(a, a + s.shape[1]).expand(len(sample), -1)], 1), 1, i)
            best_v = v
    true = best_i.numpy()
    return sample, np.array([len(np.intersect1d(t, f)) / k for t, f in zip(true, idx[sample])])


def worker(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON row on stdout and saves the labels."""
    import torch

    from hhcl_plugin.clustering import build_clusterer
    from hhcl_plugin.clustering.knn import cpu_has_bf16_matmul
    from hhcl_plugin.testing.synthetic_features import make_clustered_features
    from hhcl_plugin.config import setup_cfg

    torch.set_num_threads(os.cpu_count() or 1)
    feats, truth = make_clustered_features(args.n, args.dim, seed=args.seed, **REGIMES[args.regime])
    baseline_mb = reset_peak_rss()
    start = time.perf_counter()
    recall, knn_idx = None, None
    if args.impl == "dense":
        found = reference_clustering(feats, args)
    elif args.impl == "products":
        found = product_seconds(feats, bf16=args.bf16_products or cpu_has_bf16_matmul())
    else:
        cfg = setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.NAME",
                             "infomap" if args.impl == "infomap" else "dbscan_jaccard",
                             "CLUSTER.KNN_INDEX", "ivf" if args.impl == "ivf" else "exact",
                             "CLUSTER.K1", str(args.k1), "CLUSTER.K2", str(args.k2), "CLUSTER.EPS", str(args.eps),
                             "CLUSTER.MIN_SAMPLES", str(args.min_samples)])
        clusterer = build_clusterer(cfg)
        graph = clusterer.knn_graph(feats)
        t_knn = time.perf_counter() - start
        knn_idx = graph.idx if args.impl == "ivf" else None
        result = clusterer.cluster_knn(graph)
        del graph
        found = {"labels": result.labels, "n_clusters": result.num_clusters,
                 "stages": {**result.seconds, "knn": t_knn}}
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    if args.impl == "ivf":  # after the clustering: neither its time nor its peak
        rows, hits = knn_recall(feats, knn_idx, args.recall_rows, args.seed + 1)
        junk = truth[rows] < 0  # the generator's outliers: random directions, neighbours scattered everywhere
        recall = {"recall": float(hits.mean()), "recall_clustered": float(hits[~junk].mean()),
                  "recall_outliers": float(hits[junk].mean()) if junk.any() else None}
    if found["labels"] is not None:
        np.save(args.labels_out, found["labels"])
    from sklearn.metrics import adjusted_rand_score

    print(json.dumps({"n": args.n, "impl": args.impl, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1),
                      "baseline_rss_mb": round(baseline_mb, 1), "n_clusters": found["n_clusters"],
                      "ari_vs_truth": (None if found["labels"] is None
                                       else float(adjusted_rand_score(truth, found["labels"]))),
                      **(recall or {}), "stages": {k: round(v, 2) for k, v in found["stages"].items()}}))


def run_one(args: argparse.Namespace, n: int, impl: str, labels_out: str) -> Optional[Dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--n", str(n), "--impl", impl, "--regime", args.regime,
           "--dim", str(args.dim), "--seed", str(args.seed), "--k1", str(args.k1), "--k2", str(args.k2),
           "--eps", str(args.eps), "--min-samples", str(args.min_samples), "--labels-out", labels_out,
           "--recall-rows", str(args.recall_rows)] + ["--bf16-products"] * args.bf16_products
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
    parser.add_argument("--approx", action="store_true", help="also run the approximate k-NN (CLUSTER.KNN_INDEX ivf)")
    parser.add_argument("--no-exact", action="store_true", help="skip the exact k-NN (e.g. at N = 1,000,000)")
    parser.add_argument("--no-products", action="store_true", help="skip the plain matrix products")
    parser.add_argument("--bf16-products", action="store_true",
                        help="time the bfloat16 product even where the CPU only emulates it (slow)")
    parser.add_argument("--recall-rows", type=int, default=2000, help="sampled rows for the approximate k-NN's recall")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("products", "sparse", "ivf", "dense", "infomap"), help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from hhcl_plugin.clustering.knn import cpu_has_bf16_matmul

    print(f"clustering, {args.regime} regime: k-NN + k-reciprocal Jaccard (k1={args.k1}, k2={args.k2}) + DBSCAN "
          f"(eps={args.eps}, min_samples={args.min_samples}), D={args.dim}, {os.cpu_count()} CPU cores "
          f"({'with' if cpu_has_bf16_matmul() else 'without'} bfloat16 matrix units); peak RSS counted from the "
          f"start of the clustering, baseline = RSS then (libraries + features); medians of {args.repeats} run(s) "
          f"each, implementations in turn; speed-up = median of the per-run ratios to dense", flush=True)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            impls = ([] if args.no_products else ["products"]) + ([] if args.no_exact else ["sparse"])
            impls += (["ivf"] if args.approx else []) + (["dense"] if n <= args.reference_max else [])
            impls += ["infomap"] if args.infomap else []
            size_rows = measure_size(args, n, impls, tmp)
            print_tables(size_rows)
            rows.extend(size_rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def measure_size(args: argparse.Namespace, n: int, impls: List[str], tmp: str) -> List[Dict]:
    """The rows of one size: every implementation ``--repeats`` times, in turn, labels compared."""
    from sklearn.metrics import adjusted_rand_score

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
        if impl == "ivf" and "sparse" in labels and "ivf" in labels:
            row["ari_vs_exact"] = float(adjusted_rand_score(labels["sparse"], labels["ivf"]))
            if runs["sparse"] and runs["ivf"]:
                row["speedup_vs_exact"] = statistics.median(
                    e["seconds"] / a["seconds"] for a, e in zip(runs["ivf"], runs["sparse"]))
        if runs.get("dense") and runs[impl] and impl not in ("dense", "products"):
            row["dense_peak_rss_mb"] = by_impl["dense"]["peak_rss_mb"]
            row["speedup_median"] = statistics.median(
                d["seconds"] / s["seconds"] for s, d in zip(runs[impl], runs["dense"]))
    return list(by_impl.values())


def print_tables(rows: List[Dict]) -> None:
    """One size's tables: the clusterings, the approximate k-NN's recall, the k-NN against plain products."""
    print(tabulate([_table_row(r) for r in rows if r["impl"] != "products"],
                   headers=["N", "impl", "seconds", "k-NN s", "Jaccard s", "DBSCAN / InfoMap s", "peak MB",
                            "baseline MB", "speed-up", "peak ratio", "clusters", "ARI vs dense", "identical"],
                   floatfmt=".2f"), flush=True)
    approx = [r for r in rows if r["impl"] == "ivf" and r.get("recall") is not None]
    if approx:
        print("\napproximate k-NN (ivf): recall of the k-NN lists on sampled rows against brute force, labels "
              "against the exact k-NN's")
        print(tabulate([[r["n"], r["recall"], r["recall_clustered"], r.get("recall_outliers"),
                         r.get("ari_vs_exact", "-"),
                         f"{r['speedup_vs_exact']:.1f}x" if r.get("speedup_vs_exact") else "-",
                         r.get("ari_vs_truth")] for r in approx],
                       headers=["N", "recall@k1", "clustered rows", "outlier rows", "ARI vs exact",
                                "speed-up vs exact", "ARI vs generator"], floatfmt=".4f"), flush=True)
    knn_rows = [(r, p) for r in rows if r["impl"] == "sparse" and r.get("stages")
                for p in rows if p["impl"] == "products" and p["n"] == r["n"] and p.get("stages")]
    if knn_rows:
        print("\nexact k-NN against plain products of its size (the symmetric half of N x N x D, 2048-row blocks)")
        print(tabulate([[r["n"], r["stages"]["knn"], p["stages"]["float32"], p["stages"].get("bfloat16", "-"),
                         r["stages"]["knn"] / p["stages"]["float32"],
                         r["stages"]["knn"] / p["stages"]["bfloat16"] if "bfloat16" in p["stages"] else "-"]
                        for r, p in knn_rows],
                       headers=["N", "k-NN s", "float32 product s", "bfloat16 product s", "k-NN / float32",
                                "k-NN / bfloat16"], floatfmt=".2f"), flush=True)
    print(flush=True)


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
