"""Launcher: ``hhcl-train --config-file F [--resume | --eval-only | --move-aside] KEY VALUE ...``.

Multi-process: ``torchrun --nproc_per_node=N -m hhcl_plugin.tools.train --config-file F ...``
(or ``torchrun --nproc_per_node=N $(which hhcl-train) ...``) runs DistributedDataParallel.

A project with its own config keys calls ``main(argv, cfg=base)`` with its extended defaults.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import List, Optional

from yacs.config import CfgNode

from ..config import setup_cfg
from ..engine import HHCLEngine, build_engine, default_setup
from ..engine.run_dir import LAST, release_lock, write_results
from ..utils import comm
from ..utils.errors import UserError
from .cli import add_config_arguments, parse_command_line, run_cli

logger = logging.getLogger("hhcl_plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhcl-train", description="Unsupervised person re-ID with HHCL (a torchreid plugin)",
        epilog="Example: hhcl-train --config-file configs/hhcl_synth.yml SOLVER.MAX_EPOCH 5 OUTPUT_DIR output/try")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    parser.add_argument("--allow-config-changes", action="store_true",
                        help="with --resume: train on with config keys that change what is trained "
                             "(recorded in OUTPUT_DIR/resumes.json)")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate MODEL.WEIGHTS; writes results.json and log.txt in a new OUTPUT_DIR/eval/N")
    parser.add_argument("--move-aside", action="store_true",
                        help="rename an earlier run in OUTPUT_DIR to OUTPUT_DIR.old-N, then start afresh")
    add_config_arguments(parser)
    return parser


def setup(args: argparse.Namespace, cfg: Optional[CfgNode] = None) -> HHCLEngine:
    """The config (``cfg``: the defaults, or a project's extended ones), the default setup and the engine."""
    cfg = setup_cfg(args.config_file, args.opts, cfg)
    device = default_setup(cfg, args)
    try:
        return build_engine(cfg, device)
    except BaseException:
        release_lock(cfg.OUTPUT_DIR)
        raise


def run(args: argparse.Namespace, cfg: Optional[CfgNode] = None) -> int:
    engine = setup(args, cfg)
    cfg = engine.cfg
    try:
        if args.eval_only:
            if not engine.data.has_evaluation:
                raise UserError(f"--eval-only needs query/ and gallery/ under DATASETS.ROOT={cfg.DATASETS.ROOT}")
            result = engine.run(test_only=True)
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
    """The line printed when SIGTERM or Ctrl-C stops a run (``default_setup`` sets ``args.output_dir``)."""
    folder = getattr(args, "output_dir", "")
    if not folder or args.eval_only:
        return ""
    if not os.path.isfile(os.path.join(folder, LAST)):
        return (f"no epoch had finished, so there is nothing to resume; start again with --move-aside "
                f"(keeps what {folder} holds) or another OUTPUT_DIR")
    command = ["hhcl-train", *(["--config-file", args.config_file] if args.config_file else []), "--resume", *args.opts]
    return f"{os.path.join(folder, LAST)} holds the last finished epoch; resume with: {shlex.join(command)}"


def main(argv: Optional[List[str]] = None, cfg: Optional[CfgNode] = None) -> int:
    return run_cli("hhcl-train", lambda args: run(args, cfg), parse_command_line(build_parser(), argv), how_to_resume)


if __name__ == "__main__":
    sys.exit(main())
