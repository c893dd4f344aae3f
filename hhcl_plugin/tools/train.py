"""Launcher: ``hhcl-train --config-file F [--resume | --eval-only | --move-aside] KEY VALUE ...``.

Multi-process: ``torchrun --nproc_per_node=N -m hhcl_plugin.tools.train --config-file F ...``
(or ``torchrun --nproc_per_node=N $(which hhcl-train) ...``) runs DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import List, Optional

import torch
from yacs.config import CfgNode

from .. import engine as _engine  # noqa: F401  (registers the engines)
from ..config import setup_cfg
from ..data import build_data
from ..engine import ENGINE_REGISTRY, load_model_weights
from ..engine.run_dir import LAST, check_run_paths, release_lock, shared_output_dir, write_results
from ..modeling import build_model, resolve_device
from ..utils import comm
from ..utils.env import seed_all
from ..utils.logger import setup_logger
from .cli import add_config_arguments, parse_command_line, run_cli

logger = logging.getLogger("hhcl_plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhcl-train", description="Unsupervised person re-ID with HHCL (a torchreid plugin)",
        epilog="Example: hhcl-train --config-file configs/hhcl_synth.yml SOLVER.MAX_EPOCH 5 OUTPUT_DIR output/try")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate MODEL.WEIGHTS; writes results.json and log.txt in a new OUTPUT_DIR/eval/N")
    parser.add_argument("--move-aside", action="store_true",
                        help="rename an earlier run in OUTPUT_DIR to OUTPUT_DIR.old-N, then start afresh")
    add_config_arguments(parser)
    return parser


def build_engine(args: argparse.Namespace) -> "_engine.HHCLEngine":
    """Config, process group, logging, data, model and engine, ready to run."""
    cfg = setup_cfg(args.config_file, args.opts)
    check_run_paths(cfg)
    device = resolve_device(cfg)
    if comm.init_distributed(device.type) and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    args.output_dir = shared_output_dir(cfg.OUTPUT_DIR, args.resume, args.eval_only, args.move_aside)
    if args.output_dir != cfg.OUTPUT_DIR:  # --eval-only: a folder of its own
        cfg.defrost()
        cfg.OUTPUT_DIR = args.output_dir
        cfg.freeze()
    try:
        return _build(cfg, args, device)
    except BaseException:
        release_lock(cfg.OUTPUT_DIR)
        raise


def _build(cfg: CfgNode, args: argparse.Namespace, device: torch.device) -> "_engine.HHCLEngine":
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
    try:
        if args.eval_only:
            result = engine.evaluate("evaluation")
            if comm.is_main_process():
                path = write_results(cfg.OUTPUT_DIR, {"weights": cfg.MODEL.WEIGHTS, "dataset": engine.data.name,
                                                      "evaluation": result})
                logger.info("evaluation written to %s (log %s)", path, os.path.join(cfg.OUTPUT_DIR, "log.txt"))
            return 0
        if args.resume:
            engine.resume(os.path.join(cfg.OUTPUT_DIR, LAST))
        engine.run()
        return 0
    finally:
        release_lock(cfg.OUTPUT_DIR)


def how_to_resume(args: argparse.Namespace) -> str:
    """The line printed when SIGTERM or Ctrl-C stops a run."""
    folder = getattr(args, "output_dir", "")
    if not folder or args.eval_only:
        return ""
    if not os.path.isfile(os.path.join(folder, LAST)):
        return (f"no epoch had finished, so there is nothing to resume; start again with --move-aside "
                f"(keeps what {folder} holds) or another OUTPUT_DIR")
    command = ["hhcl-train", *(["--config-file", args.config_file] if args.config_file else []), "--resume", *args.opts]
    return f"{os.path.join(folder, LAST)} holds the last finished epoch; resume with: {shlex.join(command)}"


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli("hhcl-train", run, parse_command_line(build_parser(), argv), how_to_resume)


if __name__ == "__main__":
    sys.exit(main())
