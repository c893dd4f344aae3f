"""``hhcl-cluster --config-file F [MODEL.WEIGHTS W] --eps 0.3 0.4 0.5 auto [--output F.json] [--figure F.png]``.

Choosing DBSCAN's eps for a new dataset: the training images' features are extracted
once and their Jaccard distances computed once, then every eps is a cheap DBSCAN pass.
One table row per eps; NMI / ARI where the dataset knows its identities (synthreid, the
benchmarks), and for any dataset a picture of the clusters to judge them by eye.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..config import setup_cfg
from ..config.config import AUTO, EpsSetting, check_eps
from ..utils.errors import ConfigError
from ..utils.logger import setup_logger
from ..utils.paths import check_writable_file
from .cli import add_config_arguments, parse_command_line, run_cli

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from yacs.config import CfgNode

logger = logging.getLogger("hhcl_plugin")

COLUMNS = {"eps": "eps", "clusters": "clusters", "outlier_pct": "outliers %", "clustered": "clustered images",
           "median_size": "median size", "largest_size": "largest size", "nmi": "NMI", "ari": "ARI"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhcl-cluster", description="Cluster the training images at several DBSCAN eps and compare the results",
        epilog="Example: hhcl-cluster --config-file configs/hhcl_synth.yml --eps 0.4 0.5 0.6 auto --figure grid.png")
    parser.add_argument("--eps", nargs="+", metavar="EPS",
                        help=f"radii to try: numbers in (0, 1) or '{AUTO}' (the label-free rule); default: CLUSTER.EPS")
    parser.add_argument("--output", metavar="F.json", help="also write the rows (and the auto eps) as JSON")
    parser.add_argument("--figure", metavar="F.png", help="grid of the largest and random clusters and of outliers; "
                        "with several eps one file each: F_eps0.5.png, F_auto.png")
    add_config_arguments(parser)
    return parser


def parse_eps(values: Sequence[str]) -> List[EpsSetting]:
    """The ``--eps`` values, each a float in (0, 1) or ``auto``, in the given order without repeats."""
    out: List[EpsSetting] = []
    for text in values:
        try:
            value: EpsSetting = float(text)
        except ValueError:
            value = text
        value = check_eps(value, name="--eps")
        if value not in out:
            out.append(value)
    return out


def figure_paths(figure: str, eps_settings: Sequence[EpsSetting]) -> List[str]:
    """``figure`` itself for one setting; ``stem_eps0.5.png``, ``stem_auto.png`` and so on for several."""
    if len(eps_settings) == 1:
        return [figure]
    stem, ext = os.path.splitext(figure)
    return [f"{stem}_{AUTO if e == AUTO else f'eps{e:g}'}{ext}" for e in eps_settings]


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot be written, before the minutes of feature extraction."""
    if args.figure and os.path.splitext(args.figure)[1].lower() != ".png":
        raise ConfigError(f"--figure {args.figure}: the figure is written as PNG; give a file name ending in .png")
    for flag, path in (("--output", args.output), ("--figure", args.figure)):
        if path and os.path.isdir(path):
            raise ConfigError(f"{flag} {path} is a folder; give a file name")
        if path:  # creates its folder and a file in it: an OS error is one line now, not after the features
            check_writable_file(path, flag)


def build_sweeping_clusterer(cfg: "CfgNode") -> Any:
    """The configured clusterer, which must be one whose distances can be computed once for many eps."""
    from ..clustering import build_clusterer

    clusterer = build_clusterer(cfg)
    if not hasattr(clusterer, "jaccard_graph"):
        raise ConfigError(f"hhcl-cluster sweeps DBSCAN's eps, but CLUSTER.NAME is {cfg.CLUSTER.NAME}; "
                          "add CLUSTER.NAME dbscan_jaccard")
    return clusterer


def training_features(cfg: "CfgNode", data: Any, embedder: Any) -> "np.ndarray":
    """The training images' features as training's clustering extracts them: the dataset's test
    transform, the test loader, the one feature extractor (through ``embedder``)."""
    from ..data import build_test_loader

    return embedder.embed(build_test_loader(cfg, data.train, data.transform_test))


def sweep(clusterer: Any, features: "np.ndarray", eps_settings: Sequence[EpsSetting],
          ground_truth: Optional["np.ndarray"]) -> List[Dict]:
    """One summary per eps setting, from a single Jaccard graph; ``auto`` rows also carry the eps chosen."""
    from ..clustering.eps_rule import largest_eps, resolve_eps
    from ..clustering.summary import cluster_summary

    graph = clusterer.jaccard_graph(features, bound=max(largest_eps(e) for e in eps_settings))
    rows = []
    for setting in eps_settings:
        result = clusterer.cluster_graph(graph, eps=resolve_eps(setting, graph.nearest))
        rows.append({"setting": setting, "eps": result.eps, "labels": result.labels,
                     **cluster_summary(result.labels, ground_truth)})
    return rows


def format_table(rows: Sequence[Dict]) -> str:
    from tabulate import tabulate

    keys = [k for k in COLUMNS if k in rows[0]]
    body = [[f"{AUTO} ({r['eps']:.3f})" if r["setting"] == AUTO else f"{r['eps']:.2f}", *(r[k] for k in keys[1:])]
            for r in rows]
    return tabulate(body, headers=[COLUMNS[k] for k in keys], floatfmt=(".2f", "d", ".1f", "d", ".1f", "d", ".3f", ".3f"))


def run(args: argparse.Namespace) -> int:
    # the clustering and training stack is imported once the command line is read: --help stays instant
    from ..clustering.summary import has_ground_truth
    from ..data import build_data
    from ..deploy import Embedder
    from ..engine.cluster_grid import draw_cluster_grid
    from ..engine.run_dir import write_json

    setup_logger()
    cfg = setup_cfg(args.config_file, args.opts)
    eps_settings = parse_eps(args.eps or [str(cfg.CLUSTER.EPS)])
    check_outputs(args)
    clusterer = build_sweeping_clusterer(cfg)
    data = build_data(cfg)
    paths = [path for path, _, _ in data.train]
    features = training_features(cfg, data, Embedder(cfg))
    gt = data.train_ground_truth if has_ground_truth(data.train_ground_truth) else None
    rows = sweep(clusterer, features, eps_settings, gt)
    logger.info("clusterings of the %d training images of %s (CLUSTER.K1 %d, K2 %d, MIN_SAMPLES %d):\n%s",
                len(paths), data.name, cfg.CLUSTER.K1, cfg.CLUSTER.K2, cfg.CLUSTER.MIN_SAMPLES, format_table(rows))
    if args.output:
        write_json(args.output, {"dataset": data.name, "images": len(paths),
                                 "rows": [{k: v for k, v in r.items() if k != "labels"} for r in rows]})
        logger.info("rows written to %s", args.output)
    if args.figure:
        for row, path in zip(rows, figure_paths(args.figure, eps_settings)):
            title = (f"{data.name}, eps {row['eps']:.3f}{' (auto)' if row['setting'] == AUTO else ''}: "
                     f"{row['clusters']} clusters, {row['outlier_pct']:.0f}% outliers")
            draw_cluster_grid(paths, row["labels"], path, title=title, seed=cfg.SEED, ground_truth=gt)
            logger.info("figure written to %s", path)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli("hhcl-cluster", run, parse_command_line(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
