"""Gallery search cost: build time, index size, memory, latency, throughput and recall per index kind.

Gallery vectors are seeded clustered synthetic features (``make_clustered_features``:
identities of uneven size, ~10% loners, near-duplicate frames); the queries are further
points of the same distribution, not in the gallery.  Each (size, dim) gets one feature
file; each index kind is built and searched in its own processes, so each peak resident
memory is that process's own:

* ``build``: a gallery created with ``Gallery.create`` + one commit (vectors copied in,
  index trained and filled, search knob tuned on its own vectors): seconds, index size
  on disk, peak RSS;
* ``search``: a fresh process opens the gallery and answers the queries one at a time
  (p50 / p99 latency) and in batches of 100 (queries/s); recall@10 against exact
  search over the same vectors; peak RSS of that process;
* ``add``: 10,000 more vectors committed to that gallery (the embedding excluded): seconds;
* ``group`` (``--group-sizes``): ``hhcl-gallery group``'s clustering of a gallery: seconds.

``--embed-folder DIR --config-file F`` adds the embedding throughput of ``build`` on a
folder of images with that config's model.

Usage::

    python benchmarks/search.py --sizes 10000 100000 --dims 2048 1280
    flock /tmp/lock python benchmarks/search.py --sizes 1000000 --dims 2048 --kinds ivf
    python benchmarks/search.py --sizes 0 --embed-folder datasets/synthreid_default_s0/query \\
        --config-file configs/hhcl_synth.yml
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("benchmarks.search")

ADD_ROWS = 10_000
K = 10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory now (peak RSS would hide what the gallery adds to the imports' peak)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def features_file(workdir: str, n: int, dim: int, queries: int, seed: int) -> str:
    """(n + ADD_ROWS + queries, dim) float32 features in a file, generated in chunks (no n x dim in RAM)."""
    from hhcl_plugin.testing.synthetic_features import make_clustered_features

    path = os.path.join(workdir, f"feats_{n}_{dim}.f32")
    if not os.path.exists(path):
        total = n + ADD_ROWS + queries
        out = np.memmap(path + ".tmp", np.float32, "w+", shape=(total, dim))
        make_clustered_features(total, dim, seed=seed, outlier_frac=0.10, near_dup_frac=0.05, out=out)
        out.flush()
        del out
        os.replace(path + ".tmp", path)
    return path


def load(path: str, dim: int) -> np.ndarray:
    return np.memmap(path, np.float32, "r").reshape(-1, dim)


def records(first: int, n: int) -> list:
    from hhcl_plugin.gallery.metadata import ImageRecord

    return [ImageRecord(-1, f"/synthetic/{i:08d}.jpg", f"{i:08d}.jpg", str(i % 6), 1000, 0.0, f"{i:064x}", 0.0, 0)
            for i in range(first, first + n)]


def identity() -> dict:
    from hhcl_plugin.config import get_cfg
    from hhcl_plugin.gallery.model_identity import model_identity

    return model_identity(get_cfg())


# ---------------------------------------------------------------------------- workers (own process each)
def work_build(a: argparse.Namespace) -> Dict:
    from hhcl_plugin.gallery import Change, Gallery

    feats = load(a.features, a.dim)
    start = time.perf_counter()
    with Gallery.create(a.gallery, identity(), a.dim, a.kind) as g:
        g.commit(Change(new=records(0, a.n), vectors=feats[:a.n]))
        settings = g.settings
        index_bytes = sum(os.path.getsize(os.path.join(a.gallery, s.file)) for s in g.meta.segments())
    return {"build_s": time.perf_counter() - start, "index_mb": index_bytes / 2 ** 20, "kind": settings.kind,
            "knob": settings.search_knob, "build_recall": settings.recall_at_10, "build_rss_mb": peak_rss_mb()}


def work_search(a: argparse.Namespace) -> Dict:
    from hhcl_plugin.gallery import Gallery

    feats = load(a.features, a.dim)
    queries = np.ascontiguousarray(feats[a.n + ADD_ROWS:a.n + ADD_ROWS + a.queries])
    truth = np.load(a.truth)
    before = rss_mb()
    g = Gallery.open(a.gallery)
    start = time.perf_counter()
    g.index()
    open_s = time.perf_counter() - start
    loaded = rss_mb() - before
    g.search_vectors(queries[:10], K)  # warm-up
    lat = []
    found = []
    for q in queries:
        t = time.perf_counter()
        _, rows = g.search_vectors(q[None], K)
        lat.append(time.perf_counter() - t)
        found.append(rows[0])
    t = time.perf_counter()
    for b in range(0, len(queries), 100):
        g.search_vectors(queries[b:b + 100], K)
    batch_qps = len(queries) / (time.perf_counter() - t)
    from hhcl_plugin.gallery.index import recall_at

    rss = peak_rss_mb()
    loaded = max(loaded, rss_mb() - before)
    g.close()
    return {"open_s": open_s, "p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "batch_qps": batch_qps, "recall": recall_at(np.asarray(found), truth), "search_rss_mb": rss,
            "search_rss_over_imports_mb": loaded}


def work_add(a: argparse.Namespace) -> Dict:
    from hhcl_plugin.gallery import Change, Gallery

    feats = load(a.features, a.dim)
    new = np.ascontiguousarray(feats[a.n:a.n + ADD_ROWS])
    start = time.perf_counter()
    with Gallery.open(a.gallery, writable=True) as g:
        g.commit(Change(new=records(a.n, ADD_ROWS), vectors=new))
        kind = g.settings.kind
    return {"add_s": time.perf_counter() - start, "kind_after_add": kind}


def work_group(a: argparse.Namespace) -> Dict:
    from hhcl_plugin.config import get_cfg
    from hhcl_plugin.gallery import Gallery
    from hhcl_plugin.gallery.grouping import group_images

    cfg = get_cfg()
    cfg.CLUSTER.EPS = "auto"
    cfg.freeze()
    start = time.perf_counter()
    with Gallery.open(a.gallery) as g:
        recs, labels = group_images(g, cfg)
    return {"group_s": time.perf_counter() - start, "groups": int(labels.max()) + 1, "group_rss_mb": peak_rss_mb()}


WORKERS = {"build": work_build, "search": work_search, "add": work_add, "group": work_group}


def run_worker(step: str, **kw) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", step]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{step} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- embedding throughput
def embed_throughput(folder: str, config_file: str, opts: List[str]) -> Dict:
    from hhcl_plugin.config import setup_cfg
    from hhcl_plugin.gallery import Gallery
    from hhcl_plugin.gallery.images import list_input
    from hhcl_plugin.gallery.model_identity import model_identity
    from hhcl_plugin.gallery.updates import apply_add, plan_add

    cfg = setup_cfg(config_file, opts)
    files = list_input(folder, cfg.DATASETS.FOLDER.CAMERA)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with Gallery.create(os.path.join(tmp, "g"), model_identity(cfg)) as g:
            plan = plan_add(g, files)
            t_embed = time.perf_counter()
            apply_add(g, cfg, plan)
        end = time.perf_counter()
    return {"images": len(files), "build_s": end - start, "images_per_s": len(files) / (end - start),
            "hash_check_s": t_embed - start}


# ---------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dims", type=int, nargs="+", default=[2048, 1280])
    p.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    p.add_argument("--flat-max", type=int, default=200_000, help="skip flat above this size (4 D bytes per vector)")
    p.add_argument("--hnsw-max", type=int, default=100_000, help="skip hnsw above this size (slow to build)")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--group-sizes", type=int, nargs="*", default=[], help="sizes at which to time group (first dim)")
    p.add_argument("--no-add", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="", help="where the feature files and galleries go (default: a temp dir)")
    p.add_argument("--json", default="", help="also write all rows as JSON")
    p.add_argument("--embed-folder", default="")
    p.add_argument("--config-file", default="")
    p.add_argument("opts", nargs="*")
    # worker arguments
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    for name in ("features", "gallery", "truth", "kind"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(WORKERS[a.worker](a)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from hhcl_plugin.gallery.index import exact_topk, resolve_kind

    workdir = a.workdir or tempfile.mkdtemp(prefix="gallery_bench_")
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for dim in a.dims:
        for n in [s for s in a.sizes if s > 0]:
            feats_path = features_file(workdir, n, dim, a.queries, a.seed)
            feats = load(feats_path, dim)
            truth_path = os.path.join(workdir, f"truth_{n}_{dim}.npy")
            if not os.path.exists(truth_path):
                t = time.perf_counter()
                _, truth = exact_topk(feats[:n], feats[n + ADD_ROWS:n + ADD_ROWS + a.queries], K)
                np.save(truth_path, truth)
                logger.info("exact top-%d of %d queries at N=%d, D=%d in %.1fs", K, a.queries, n, dim,
                            time.perf_counter() - t)
            for kind in a.kinds:
                if (kind == "flat" and n > a.flat_max) or (kind == "hnsw" and n > a.hnsw_max):
                    continue
                gallery = os.path.join(workdir, f"g_{n}_{dim}_{kind}")
                shutil.rmtree(gallery, ignore_errors=True)
                common = {"features": feats_path, "gallery": gallery, "n": n, "dim": dim}
                row = {"N": n, "D": dim, "index": kind, "auto": "<- auto" if resolve_kind("auto", n, dim) == kind else ""}
                row.update(run_worker("build", kind=kind, **common))
                row.update(run_worker("search", truth=truth_path, queries=a.queries, **common))
                if not a.no_add:
                    row.update(run_worker("add", **common))
                if n in a.group_sizes and dim == a.dims[0] and kind == a.kinds[0]:
                    row.update(run_worker("group", **common))
                logger.info("%s", row)
                rows.append(row)
                shutil.rmtree(gallery, ignore_errors=True)
            del feats
    if rows:
        cols = [("N", "N"), ("D", "D"), ("index", "index"), ("auto", "auto's choice"),
                ("build_s", "build s"), ("index_mb", "index MB"), ("build_rss_mb", "build peak RSS MB"),
                ("knob", "nprobe/efSearch"), ("build_recall", "recall@10 at build"), ("p50_ms", "p50 ms"),
                ("p99_ms", "p99 ms"), ("batch_qps", "queries/s (batches of 100)"), ("recall", "recall@10"),
                ("search_rss_mb", "search peak RSS MB"), ("search_rss_over_imports_mb", "of which gallery MB"), ("add_s", "add 10k s"), ("group_s", "group s")]
        cols = [(k, h) for k, h in cols if any(k in r for r in rows)]
        print(tabulate([[r.get(k, "") for k, _ in cols] for r in rows], headers=[h for _, h in cols], floatfmt=".3g"))
    if a.embed_folder:
        e = embed_throughput(a.embed_folder, a.config_file, a.opts)
        print(tabulate([[e["images"], e["build_s"], e["images_per_s"], e["hash_check_s"]]],
                       headers=["images", "build s", "images/s", "of which hash + check s"], floatfmt=".3g"))
        rows.append(e)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
