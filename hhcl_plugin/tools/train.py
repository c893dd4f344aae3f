"""Launcher: ``hhcl-train --config-file F [--resume] [--eval-only] KEY VALUE ...``.

Multi-process: ``torchrun --nproc_per_node=N -m hhcl_plugin.tools.train --config-file F ...``
(or ``torchrun --nproc_per_node=N $(which hhcl-train) ...``) runs DistributedDataParallel.

A project with its own config keys calls ``main(argv, cfg=base)`` with its extended defaults.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from yacs.config import CfgNode

from ..config import setup_cfg
from ..engine import HHCLEngine, build_engine, default_setup
from ..engine.checkpoint import previous_path
from ..utils.errors import UserError
from .cli import add_config_arguments, parse_command_line, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhcl-train", description="Unsupervised person re-ID with HHCL (a torchreid plugin)",
        epilog="Example: hhcl-train --config-file configs/hhcl_synth.yml SOLVER.MAX_EPOCH 5 OUTPUT_DIR output/try")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    add_config_arguments(parser)
    return parser


def setup(args: argparse.Namespace, cfg: Optional[CfgNode] = None) -> HHCLEngine:
    """The config (``cfg``: the defaults, or a project's extended ones), the default setup and the engine."""
    cfg = setup_cfg(args.config_file, args.opts, cfg)
    return build_engine(cfg, default_setup(cfg, args))


def run(args: argparse.Namespace, cfg: Optional[CfgNode] = None) -> int:
    engine = setup(args, cfg)
    if args.eval_only:
        if not engine.data.has_evaluation:
            raise UserError(f"--eval-only needs query/ and gallery/ under DATASETS.ROOT={engine.cfg.DATASETS.ROOT}")
        engine.evaluate("evaluation")
        return 0
    last = os.path.join(engine.cfg.OUTPUT_DIR, "last.pth")
    if args.resume:
        if not os.path.isfile(last) and not os.path.isfile(previous_path(last)):
            raise UserError(f"--resume given but {last} does not exist; drop --resume to start a new run")
        engine.resume(last)
    engine.run()
    return 0


def main(argv: Optional[List[str]] = None, cfg: Optional[CfgNode] = None) -> int:
    return run_cli("hhcl-train", lambda args: run(args, cfg), parse_command_line(build_parser(), argv),
                   "interrupted; resume with --resume")


if __name__ == "__main__":
    sys.exit(main())
