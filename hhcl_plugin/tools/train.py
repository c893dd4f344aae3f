"""Launcher: ``hhcl-train --config-file F [--resume] [--eval-only] KEY VALUE ...``.

Multi-process: ``torchrun --nproc_per_node=N -m hhcl_plugin.tools.train --config-file F ...``
(or ``torchrun --nproc_per_node=N $(which hhcl-train) ...``) runs DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import torch

from .. import engine as _engine  # noqa: F401  (registers the engines)
from ..config import setup_cfg
from ..data import build_data
from ..engine import ENGINE_REGISTRY, load_model_weights
from ..engine.checkpoint import previous_path
from ..modeling import build_model, resolve_device
from ..utils import comm
from ..utils.env import seed_all
from ..utils.errors import UserError
from ..utils.logger import setup_logger
from .cli import add_config_arguments, parse_command_line, run_cli

logger = logging.getLogger("hhcl_plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhcl-train", description="Unsupervised person re-ID with HHCL (a torchreid plugin)",
        epilog="Example: hhcl-train --config-file configs/hhcl_synth.yml SOLVER.MAX_EPOCH 5 OUTPUT_DIR output/try")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    add_config_arguments(parser)
    return parser


def build_engine(args: argparse.Namespace) -> "_engine.HHCLEngine":
    """Config, process group, logging, data, model and engine, ready to run."""
    cfg = setup_cfg(args.config_file, args.opts)
    device = resolve_device(cfg)
    if comm.init_distributed(device.type) and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        setup_logger(cfg.OUTPUT_DIR)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    else:  # other ranks only report problems
        setup_logger(level=logging.WARNING)
    logger.info("config %s, output in %s, %d process(es)", args.config_file or "(defaults)", cfg.OUTPUT_DIR,
                comm.get_world_size())
    # the same model initialisation everywhere (DDP also broadcasts it); per-rank augmentation
    seed_all(cfg.SEED + comm.get_rank(), cfg.DETERMINISTIC)
    data = build_data(cfg)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(model, cfg.MODEL.WEIGHTS)
    return ENGINE_REGISTRY.get(cfg.ENGINE)(cfg, data, model, device)


def run(args: argparse.Namespace) -> int:
    engine = build_engine(args)
    cfg = engine.cfg
    if args.eval_only:
        if not engine.data.has_evaluation:
            raise UserError(f"--eval-only needs query/ and gallery/ under DATASETS.ROOT={cfg.DATASETS.ROOT}")
        engine.evaluate("evaluation")
        return 0
    last = os.path.join(cfg.OUTPUT_DIR, "last.pth")
    if args.resume:
        if not os.path.isfile(last) and not os.path.isfile(previous_path(last)):
            raise UserError(f"--resume given but {last} does not exist; drop --resume to start a new run")
        engine.resume(last)
    engine.run()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli("hhcl-train", run, parse_command_line(build_parser(), argv), "interrupted; resume with --resume")


if __name__ == "__main__":
    sys.exit(main())
