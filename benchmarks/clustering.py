"""Clustering cost: sparse Jaccard + sparse DBSCAN against the dense published approach.

Each measurement runs in its own process, so its peak resident memory is its own: the
parent starts one worker per (size, implementation), the worker generates the same
seeded clustered features (``make_clustered_features``), runs the whole clustering
(k-NN, Jaccard distance, DBSCAN) and reports seconds, peak RSS and its labels.  The
dense reference runs only up to ``--reference-max`` (it needs ~3 N^2 float32); the
sparse labels are compared with the dense ones (ARI) wherever both ran.

Usage::

    python benchmarks/clustering.py --sizes 12936 32621 100000 --dim 2048 --reference-max 32621 --json out.json
    python benchmarks/clustering.py --sizes 12936 32621 --repeats 3   # medians, sparse and dense in turn
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


def worker(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON row on stdout and saves the labels."""
    import torch

    from hhcl_plugin.clustering import build_clusterer, make_clustered_features
    from hhcl_plugin.config import setup_cfg

    torch.set_num_threads(os.cpu_count() or 1)
    feats, _ = make_clustered_features(args.n, args.dim, seed=args.seed)
    cfg = setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.JACCARD", args.impl,
                         "CLUSTER.K1", str(args.k1), "CLUSTER.K2", str(args.k2), "CLUSTER.EPS", str(args.eps),
                         "CLUSTER.MIN_SAMPLES", str(args.min_samples)])
    clusterer = build_clusterer(cfg)
    baseline_mb = reset_peak_rss()
    start = time.perf_counter()
    result = clusterer(feats)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    np.save(args.labels_out, result.labels)
    print(json.dumps({"n": args.n, "impl": args.impl, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1),
                      "baseline_rss_mb": round(baseline_mb, 1), "n_clusters": result.num_clusters,
                      "stages": {k: round(v, 2) for k, v in result.seconds.items()}}))


def run_one(args: argparse.Namespace, n: int, impl: str, labels_out: str) -> Optional[Dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--n", str(n), "--impl", impl,
           "--dim", str(args.dim), "--seed", str(args.seed), "--k1", str(args.k1), "--k2", str(args.k2),
           "--eps", str(args.eps), "--min-samples", str(args.min_samples), "--labels-out", labels_out]
    logger.info("running %s N=%d ...", impl, n)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        logger.error("%s N=%d failed (exit %d): %s", impl, n, proc.returncode, proc.stderr.strip()[-500:])
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    logger.info("%s N=%d: %.1fs, peak %.0f MB, %d clusters", impl, n, row["seconds"], row["peak_rss_mb"],
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
    parser.add_argument("--reference-max", type=int, default=32621, help="largest N for the dense reference")
    parser.add_argument("--json", default="", help="write the rows to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement (medians reported)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("sparse", "dense"), help=argparse.SUPPRESS)
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
            impls = ["sparse"] + (["dense"] if n <= args.reference_max else [])
            runs: Dict[str, List[Dict]] = {impl: [] for impl in impls}
            labels = {}
            for _ in range(args.repeats):  # in turn, so that drifting machine speed hits both
                for impl in impls:
                    path = os.path.join(tmp, f"{impl}_{n}.npy")
                    row = run_one(args, n, impl, path)
                    if row is not None:
                        runs[impl].append(row)
                        labels[impl] = np.load(path)
            for impl in impls:
                rows.append(_median_row(n, impl, runs[impl]))
            if runs.get("dense") and runs["sparse"]:
                rows[-2]["speedup_median"] = statistics.median(
                    d["seconds"] / s["seconds"] for s, d in zip(runs["sparse"], runs["dense"]))
            if "sparse" in labels and "dense" in labels:
                ari = float(adjusted_rand_score(labels["dense"], labels["sparse"]))
                identical = bool(np.array_equal(labels["dense"], labels["sparse"]))
                for row in rows:
                    if row["n"] == n:
                        row["ari_vs_dense"] = ari
                        row["labels_identical"] = identical
    for row in rows:
        row.setdefault("ari_vs_dense", None)
    table = []
    for n in args.sizes:
        by_impl = {r["impl"]: r for r in rows if r["n"] == n}
        s, d = by_impl.get("sparse", {}), by_impl.get("dense", {})
        both = s.get("seconds") and d.get("seconds")
        base = s.get("baseline_rss_mb")
        table.append([
            n, s.get("seconds"), d.get("seconds", "-"), f"{s['speedup_median']:.1f}x" if both else "-",
            s.get("peak_rss_mb"), d.get("peak_rss_mb", "-"),
            f"{d['peak_rss_mb'] / s['peak_rss_mb']:.1f}x" if both else "-", base,
            f"{(d['peak_rss_mb'] - d['baseline_rss_mb']) / max(s['peak_rss_mb'] - base, 1.0):.0f}x" if both else "-",
            s.get("n_clusters"), s.get("ari_vs_dense") if s.get("ari_vs_dense") is not None else "-",
        ])
    print(f"clustering: k-NN + k-reciprocal Jaccard (k1={args.k1}, k2={args.k2}) + DBSCAN (eps={args.eps}, "
          f"min_samples={args.min_samples}), D={args.dim}, {os.cpu_count()} CPU cores; peak RSS counted from "
          f"the start of the clustering, baseline = RSS then (libraries + features); medians of {args.repeats} "
          "run(s) each, sparse and dense in turn; speed-up = median of the per-pair ratios")
    print(tabulate(table, headers=["N", "sparse s", "dense s", "speed-up", "sparse peak MB", "dense peak MB",
                                   "peak ratio", "baseline MB", "ratio above baseline", "clusters",
                                   "ARI vs dense"], floatfmt=".1f"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
