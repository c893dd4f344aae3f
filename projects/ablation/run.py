"""Run the memory-mode ablation (4 modes x 3 seeds) and write its table into README.md.

Usage::

    python projects/ablation/run.py [--modes CM CMhard CMhybrid CMhybrid_v2] [--seeds 1 2 3]

Each run is ``hhcl-train --config-file projects/ablation/ablation.yml MEMORY.MODE M SEED S``
in its own process; finished runs (``metrics.json`` with ``final``) are reused, so an
interrupted ablation continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

from tabulate import tabulate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BEGIN, END = "<!-- ablation table: begin -->", "<!-- ablation table: end -->"
logger = logging.getLogger("ablation")


def run_one(mode: str, seed: int, out_root: str, table_only: bool = False) -> Optional[Dict]:
    out = os.path.join(out_root, f"{mode}_seed{seed}")
    metrics_path = os.path.join(out, "metrics.json")
    finished = os.path.isfile(metrics_path) and "final" in json.load(open(metrics_path))
    if not finished and table_only:
        return None
    if not finished:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "hhcl_plugin.tools.train", "--config-file", os.path.join(HERE, "ablation.yml"),
               "MEMORY.MODE", mode, "SEED", str(seed), "OUTPUT_DIR", out,
               # an unfinished run continues; one stopped before its first epoch ended is kept aside
               "--resume" if os.path.isfile(os.path.join(out, "last.pth")) else "--move-aside"]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        logger.info("%s seed %d done in %.1f min", mode, seed, (time.perf_counter() - start) / 60)
    metrics = json.load(open(metrics_path))
    last = metrics["evaluations"][-1]
    return {"mAP": metrics["final"]["mAP"], "rank1": metrics["final"]["rank1"], "ari": last.get("ari", float("nan"))}


def mean_std(values: List[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["CM", "CMhard", "CMhybrid", "CMhybrid_v2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--output", default=os.path.join(REPO, "output", "ablation"))
    parser.add_argument("--table-only", action="store_true", help="only tabulate the runs that have finished")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    rows = []
    for mode in args.modes:
        runs = [r for r in (run_one(mode, seed, args.output, args.table_only) for seed in args.seeds) if r]
        if not runs:
            continue
        rows.append([f"`{mode}`", mean_std([r["mAP"] for r in runs]), mean_std([r["rank1"] for r in runs]),
                     mean_std([100 * r["ari"] for r in runs]), " / ".join(f"{r['mAP']:.1f}" for r in runs) + ("" if len(runs) == len(args.seeds) else " (unfinished seeds missing)")])
    table = tabulate(rows, headers=["MEMORY.MODE", "mAP", "rank-1", "pseudo-label ARI x100 (last epoch)",
                                    f"mAP per seed ({', '.join(map(str, args.seeds))})"], tablefmt="github")
    print(table)
    readme = os.path.join(HERE, "README.md")
    text = open(readme).read()
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(readme, "w") as f:
        f.write(text[:a] + "\n" + table + "\n" + text[b:])
    logger.info("ablation done in %.1f min; table written to %s", (time.perf_counter() - start) / 60, readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
