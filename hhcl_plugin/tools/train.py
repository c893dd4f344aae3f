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
from typing import TYPE_CHECKING, List, Optional

from ..utils.errors import UserError
from .cli import add_config_arguments, parse_command_line, run_cli

if TYPE_CHECKING:  # pragma: no cover
    from yacs.config import CfgNode

    from ..engine import HHCLEngine
    from ..engine.defaults import RunSetup

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


def setup(args: argparse.Namespace, cfg: Optional["CfgNode"] = None) -> "RunSetup":
    """The config (``cfg``: the defaults, or a project's extended ones) and the default setup of the run,
    a context whose end releases what the setup acquired (see :func:`~hhcl_plugin.engine.default_setup`)."""
    from ..config import setup_cfg  # the training stack is imported once the command line is read
    from ..engine import default_setup

    return default_setup(setup_cfg(args.config_file, args.opts, cfg), args)


def run(args: argparse.Namespace, cfg: Optional["CfgNode"] = None) -> int:
    from ..engine import build_engine
    from ..engine.run_dir import LAST, write_results
    from ..utils import comm

    with setup(args, cfg) as run_setup:
        engine: "HHCLEngine" = build_engine(run_setup.cfg, run_setup.device)
        cfg = engine.cfg
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


def how_to_resume(args: argparse.Namespace) -> str:
    """The line printed when SIGTERM or Ctrl-C stops a run (``default_setup`` sets ``args.output_dir``)."""
    from ..engine.run_dir import LAST

    folder = getattr(args, "output_dir", "")
    if not folder or args.eval_only:
        return ""
    if not os.path.isfile(os.path.join(folder, LAST)):
        return (f"no epoch had finished, so there is nothing to resume; start again with --move-aside "
                f"(keeps what {folder} holds) or another OUTPUT_DIR")
    command = ["hhcl-train", *(["--config-file", args.config_file] if args.config_file else []), "--resume", *args.opts]
    return f"{os.path.join(folder, LAST)} holds the last finished epoch; resume with: {shlex.join(command)}"


def main(argv: Optional[List[str]] = None, cfg: Optional["CfgNode"] = None) -> int:
    return run_cli("hhcl-train", lambda args: run(args, cfg), parse_command_line(build_parser(), argv), how_to_resume)


if __name__ == "__main__":
    sys.exit(main())
