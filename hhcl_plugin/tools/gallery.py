"""``hhcl-gallery build|add|prune|search|group``: a persistent, searchable gallery of embedded images.

    hhcl-gallery build  --config-file F MODEL.WEIGHTS W --input DIR --gallery G [--index auto|flat|ivf|hnsw]
    hhcl-gallery add    --gallery G --input DIR2
    hhcl-gallery prune  --gallery G
    hhcl-gallery search --gallery G --query Q [--top-k 20] [--exclude-same-camera] [--rerank]
                        [--output results.csv|json] [--figure ranked.png]
    hhcl-gallery group  --gallery G [--since T] [--eps E|auto] --output people.csv [--folders OUT] [--figure F.png]

Every input is checked (one line, exit 2) before the first image is embedded.  docs/search.md has the details.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
from typing import Callable, Dict, List, Optional

from tabulate import tabulate

from ..utils.errors import UserError
from ..utils.logger import setup_logger
from .cli import add_config_arguments, parse_command_line, run_cli

logger = logging.getLogger("hhcl_plugin")

COMMANDS = ("build", "add", "prune", "search", "group")


def build_parsers() -> Dict[str, argparse.ArgumentParser]:
    """One parser per command (each parsed with KEY VALUE overrides anywhere on the line)."""
    parsers = {}

    def parser(name: str, description: str) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=f"hhcl-gallery {name}", description=description)
        p.add_argument("--gallery", required=True, metavar="G", help="the gallery folder")
        parsers[name] = p
        return p

    p = parser("build", "Embed every image under a folder into a new gallery")
    p.add_argument("--input", required=True, metavar="DIR", help="folder of images (recursively)")
    p.add_argument("--index", default="auto", choices=("auto", "flat", "ivf", "hnsw"),
                   help="auto: exact search for small galleries, ivf above (default)")
    p.add_argument("--batch-size", type=int, default=0, help="default: TEST.IMS_PER_BATCH")
    add_config_arguments(p)
    p = parser("add", "Embed the images of a folder that are new or changed since they were added")
    p.add_argument("--input", required=True, metavar="DIR", help="folder of images (recursively)")
    p.add_argument("--batch-size", type=int, default=0, help="default: TEST.IMS_PER_BATCH")
    add_config_arguments(p)
    p = parser("prune", "Drop the images whose file no longer exists")
    p = parser("search", "Rank the gallery's images for a query image or a folder of them")
    p.add_argument("--query", required=True, metavar="Q", help="an image or a folder of images")
    p.add_argument("--top-k", type=int, default=20, help="images per query (default 20)")
    p.add_argument("--exclude-same-camera", action="store_true", help="leave out images of the query's camera")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking of the top candidates")
    p.add_argument("--output", metavar="F.csv|F.json", help="write the ranked lists")
    p.add_argument("--figure", metavar="F.png", help="draw each query with its top images")
    add_config_arguments(p)
    p = parser("group", "Cluster the gallery's images into the people who appeared")
    p.add_argument("--since", metavar="T", help="only images added at or after T (date, date and time, or epoch seconds)")
    p.add_argument("--eps", metavar="E|auto", help="DBSCAN radius, or auto (default: CLUSTER.EPS of the gallery's config)")
    p.add_argument("--output", required=True, metavar="people.csv", help="one row per image: identity, path, camera, time")
    p.add_argument("--folders", metavar="OUT", help="one folder per identity with links to its images")
    p.add_argument("--figure", metavar="F.png", help="grid figure of the largest groups")
    add_config_arguments(p)
    return parsers


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parsers()
    if not argv or argv[0] not in parsers:
        top = argparse.ArgumentParser(prog="hhcl-gallery", description=__doc__.split("\n\n")[0],
                                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
        top.add_argument("command", choices=COMMANDS)
        top.parse_args(argv[:1])  # prints the usage and exits 2
    args = parse_command_line(parsers[argv[0]], argv[1:])
    args.command = argv[0]
    return args


# ---------------------------------------------------------------------------- checks (before any work)
def check_output(path: Optional[str], flag: str, suffixes: tuple) -> None:
    from ..utils.paths import check_writable_file

    if not path:
        return
    if os.path.splitext(path)[1].lower() not in suffixes:
        raise UserError(f"{flag} {path}: give a file name ending in {' or '.join(suffixes)}")
    check_writable_file(path, flag)


# ---------------------------------------------------------------------------- commands
def cmd_build(args: argparse.Namespace) -> int:
    from ..config import setup_cfg
    from ..gallery import Gallery, GalleryError
    from ..gallery.images import list_input
    from ..gallery.model_identity import model_identity
    from ..utils.paths import check_writable_dir

    cfg = setup_cfg(args.config_file, args.opts)
    if Gallery.exists(args.gallery):
        raise GalleryError(f"--gallery {args.gallery} already holds a gallery; add images with hhcl-gallery add "
                           "--gallery G --input DIR, or give a new folder")
    check_writable_dir(args.gallery, "--gallery")
    identity = model_identity(cfg)  # checks and hashes the weights
    files = list_input(args.input, cfg.DATASETS.FOLDER.CAMERA)
    gallery = Gallery.create(args.gallery, identity, index=args.index)
    try:
        _add_files(gallery, cfg, files, args.batch_size, "built from")
    except BaseException:
        if gallery.generation == 0:  # nothing committed: leave no empty gallery behind
            gallery.discard()
        raise
    finally:
        gallery.close()
    return 0


def _add_files(gallery, cfg, files, batch_size: int, what: str) -> None:
    """The one path of build and add: plan (hash, check), embed what is new, commit."""
    from ..gallery.updates import apply_add, plan_add

    plan = plan_add(gallery, files)
    logger.info("%d images: %d unchanged, %d to embed, %d copies of images already embedded, %d touched",
                len(files), plan.unchanged, len(plan.embed), len(plan.copy), len(plan.touched))
    start = time.perf_counter()
    added = apply_add(gallery, cfg, plan, batch_size, seed=cfg.SEED)
    _report(gallery, f"{what} {len(files)} images ({added} added or replaced) in {time.perf_counter() - start:.1f}s")


def cmd_add(args: argparse.Namespace) -> int:
    from ..gallery import Gallery
    from ..gallery.images import list_input
    from ..gallery.search import gallery_config

    gallery = Gallery.open(args.gallery, writable=True)
    try:
        cfg = gallery_config(gallery, args.config_file, args.opts)
        files = list_input(args.input, cfg.DATASETS.FOLDER.CAMERA)
        _add_files(gallery, cfg, files, args.batch_size, "add of")
    finally:
        gallery.close()
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ..gallery import Gallery
    from ..gallery.updates import prune

    gallery = Gallery.open(args.gallery, writable=True)
    try:
        gone = prune(gallery)
        _report(gallery, f"{len(gone)} images whose file is gone dropped")
    finally:
        gallery.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..gallery import Gallery
    from ..gallery.images import check_readable, list_input
    from ..gallery.search import RerankSettings, embed_queries, gallery_config, search_gallery

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: give a number of images of at least 1")
    check_output(args.output, "--output", (".csv", ".json"))
    check_output(args.figure, "--figure", (".png",))
    gallery = Gallery.open(args.gallery)
    try:
        cfg = gallery_config(gallery, args.config_file, args.opts)
        camera = cfg.DATASETS.FOLDER.CAMERA
        if args.exclude_same_camera and camera == "none":
            raise UserError("--exclude-same-camera needs cameras, but the gallery's DATASETS.FOLDER.CAMERA is none; "
                            "build the gallery with DATASETS.FOLDER.CAMERA dir or a pattern, or drop the flag")
        files = list_input(args.query, camera, "--query")
        check_readable([f.path for f in files])
        queries = embed_queries(gallery, [f.path for f in files], cfg=cfg)
        rerank = RerankSettings(cfg.TEST.RERANK_K1, cfg.TEST.RERANK_K2, cfg.TEST.RERANK_LAMBDA) if args.rerank else None
        results = search_gallery(gallery, queries, args.top_k,
                                 [f.camera for f in files] if args.exclude_same_camera else None, rerank)
    finally:
        gallery.close()
    rows = [{"query": f.path, "rank": m.rank, "path": m.path, "similarity": round(m.similarity, 6),
             "camera": m.camera, **({"distance": round(m.distance, 6)} if m.distance is not None else {})}
            for f, matches in zip(files, results) for m in matches]
    shown = [r for r in rows if r["rank"] <= 5][:50]
    logger.info("top matches of %d queries%s:\n%s", len(files), " (first 5 of each)" if args.top_k > 5 else "",
                tabulate(shown, headers="keys", floatfmt=".3f"))
    if args.output:
        _write_rows(args.output, rows)
        logger.info("%d rows written to %s", len(rows), args.output)
    if args.figure:
        from ..gallery.figure import draw_ranked

        ids = [f.rel.split("/", 1)[0] if "/" in f.rel else None for f in files]
        draw_ranked([f.path for f in files], ids, results, args.figure, top=min(args.top_k, 10))
        logger.info("figure written to %s", args.figure)
    return 0


def _write_rows(path: str, rows: List[Dict]) -> None:
    from ..utils.paths import write_atomically

    if path.lower().endswith(".json"):
        data = json.dumps(rows, indent=1).encode()
    else:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["query", "rank", "path"])
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode()
    write_atomically(path, lambda f: f.write(data), "the results")


def cmd_group(args: argparse.Namespace) -> int:
    from ..clustering.eps_rule import check_eps
    from ..engine.cluster_grid import draw_cluster_grid
    from ..gallery import Gallery
    from ..gallery.grouping import group_images, parse_since, write_group_folders, write_people_csv
    from ..gallery.search import gallery_config

    since = parse_since(args.since) if args.since else None
    check_output(args.output, "--output", (".csv",))
    check_output(args.figure, "--figure", (".png",))
    opts = list(args.opts)
    if args.eps:
        try:
            eps = float(args.eps)
        except ValueError:
            eps = args.eps
        check_eps(eps, name="--eps")
        opts += ["CLUSTER.EPS", args.eps if eps == "auto" else str(eps)]
    gallery = Gallery.open(args.gallery)
    try:
        cfg = gallery_config(gallery, args.config_file, opts, verify_weights=False)
        start = time.perf_counter()
        records, labels = group_images(gallery, cfg, since)
    finally:
        gallery.close()
    people = int(labels.max()) + 1 if len(labels) else 0
    logger.info("%d images grouped into %d people (%d in no group) in %.1fs", len(records), people,
                int((labels < 0).sum()), time.perf_counter() - start)
    write_people_csv(args.output, records, labels)
    logger.info("written %s", args.output)
    if args.folders:
        write_group_folders(args.folders, records, labels)
        logger.info("one folder per person in %s", args.folders)
    if args.figure and people:
        draw_cluster_grid([r.path for r in records], labels, args.figure,
                          title=f"{people} people, {int((labels < 0).sum())} images in no group", seed=cfg.SEED)
        logger.info("figure written to %s", args.figure)
    return 0


def _report(gallery, what: str) -> None:
    s = gallery.settings
    recall = "" if s.recall_at_10 is None else f", recall@10 {s.recall_at_10:.3f} against exact search"
    logger.info("gallery %s: %s; %d images, %s index%s", gallery.folder, what, len(gallery), s.kind, recall)


COMMAND_RUNNERS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "add": cmd_add, "prune": cmd_prune, "search": cmd_search, "group": cmd_group}


def run(args: argparse.Namespace) -> int:
    setup_logger()
    return COMMAND_RUNNERS[args.command](args)


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli("hhcl-gallery", run, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
