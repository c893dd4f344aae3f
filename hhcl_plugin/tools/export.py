"""``hhcl-export --config-file F MODEL.WEIGHTS W --format onnx|pt2|torchscript --output PATH``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from ..config import setup_cfg
from ..utils.logger import setup_logger
from ..utils.paths import check_weights, check_writable_file, make_parent, write_error
from .cli import add_config_arguments, parse_command_line, run_cli

logger = logging.getLogger("hhcl_plugin")
EXPORTERS = {"onnx": "export_onnx", "pt2": "export_program", "torchscript": "export_torchscript"}  # in deploy.export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hhcl-export", description="Export the embedding model for deployment")
    parser.add_argument("--format", choices=sorted(EXPORTERS), required=True)
    parser.add_argument("--output", required=True, help="file to write (.onnx, .pt2 or .pt)")
    add_config_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    setup_logger()
    cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    check_writable_file(args.output, "--output")
    check_weights(cfg.MODEL.WEIGHTS)
    from ..deploy import Embedder, export  # the model stack, once the command line is read: --help stays instant

    model = Embedder(cfg).model
    make_parent(args.output)
    # into a temporary file next to it, then renamed: a failed export leaves an earlier file as it was
    tmp = os.path.join(os.path.dirname(os.path.abspath(args.output)), f".tmp-{os.getpid()}-{os.path.basename(args.output)}")
    try:
        getattr(export, EXPORTERS[args.format])(model, tmp, tuple(cfg.INPUT.SIZE_TEST))
        os.replace(tmp, args.output)
    except OSError as e:
        raise write_error(args.output, e, "the exported model") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("%s model (input %s, output %d-d unit-norm features) written to %s", args.format,
                tuple(cfg.INPUT.SIZE_TEST), model.feat_dim, args.output)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli("hhcl-export", run, parse_command_line(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
