"""Training input pipeline: images/s that the data loader delivers, by number of workers.

A GPU trains ResNet-50 at 256x128 several thousand images/s (see train_throughput.py); the
loader decodes, resizes, flips, crops, converts, normalises and erases on the CPU (about
400 images/s per core on the 2-core machine this was written on).  This prints what a given machine delivers so
that ``DATALOADER.NUM_WORKERS`` can be set from measurements rather than guessed.  The
images are the configured dataset's training images (default: the built-in ``synthreid``,
generated on first use), drawn at random, with the recipe's transforms.

Usage::

    python benchmarks/data_loading.py                       # 0, 1, 2, 4 workers, 12 batches of 256
    python benchmarks/data_loading.py DATASETS.NAMES "('market1501',)" --workers 8 16   # overrides first
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Optional

import torch
from tabulate import tabulate
from torch.utils.data import RandomSampler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hhcl_plugin.config import setup_cfg  # noqa: E402
from hhcl_plugin.data import build_data, build_train_loader  # noqa: E402
from hhcl_plugin.tools.cli import add_config_arguments, parse_command_line, run_cli  # noqa: E402


def images_per_second(cfg, data, workers: int, batches: int) -> float:
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.freeze()
    per_batch = cfg.SOLVER.IMS_PER_BATCH
    sampler = RandomSampler(data.train, replacement=True, num_samples=per_batch * (batches + 2))
    batches_left = iter(build_train_loader(cfg, data.train, data.transform_train, sampler))
    next(batches_left), next(batches_left)  # not timed: worker start-up
    start = time.perf_counter()
    images = sum(batch["img"].shape[0] for batch in batches_left)
    return images / (time.perf_counter() - start)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.set_defaults(config_file="configs/hhcl_r50.yml")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--batches", type=int, default=12, help="timed batches per setting")
    logging.basicConfig(level=logging.WARNING)
    return run_cli("data_loading.py", run, parse_command_line(parser, argv))  # a wrong dataset: one line, exit 2


def run(args: argparse.Namespace) -> int:
    cfg = setup_cfg(args.config_file, ["DATASETS.NAMES", "('synthreid',)", *args.opts])
    data = build_data(cfg)
    rows = []
    for workers in args.workers:
        rate = images_per_second(cfg, data, workers, args.batches)
        rows.append([workers, f"{rate:.0f}", f"{rate / max(workers, 1):.0f}"])
    height, width = cfg.INPUT.SIZE_TRAIN
    print(f"training loader: {cfg.DATASETS.NAMES[0]}, {height}x{width}, transforms {list(cfg.INPUT.TRANSFORMS)}, "
          f"batch {cfg.SOLVER.IMS_PER_BATCH}, {os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads")
    print(tabulate(rows, headers=["workers", "images/s", "images/s per worker (0: main process)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
