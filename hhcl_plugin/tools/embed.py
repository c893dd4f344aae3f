"""``hhcl-embed --config-file F MODEL.WEIGHTS W --input DIR --output OUT.npz``: features of a folder of images."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ..config import setup_cfg
from ..utils.logger import setup_logger
from ..utils.paths import check_weights, check_writable_file, make_parent, write_atomically
from .cli import add_config_arguments, parse_command_line, run_cli

logger = logging.getLogger("hhcl_plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hhcl-embed", description="Unit-norm re-ID features of every image in a folder",
                                     epilog="Writes an .npz with 'features' (N, D) float32 and 'paths' (N,).")
    parser.add_argument("--input", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, help="where to write the .npz")
    parser.add_argument("--batch-size", type=int, default=0, help="default: TEST.IMS_PER_BATCH")
    add_config_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import numpy as np  # with the model stack, once the command line is read: --help stays instant

    from ..deploy import Embedder, list_images

    setup_logger()
    cfg = setup_cfg(args.config_file, args.opts)
    check_writable_file(args.output, "--output")
    check_weights(cfg.MODEL.WEIGHTS)
    paths = list_images(args.input)
    features = Embedder(cfg).embed(paths, batch_size=args.batch_size)
    make_parent(args.output)
    write_atomically(args.output, lambda f: np.savez(f, features=features, paths=np.asarray(paths)), "the features")
    logger.info("%d features of dimension %d written to %s", *features.shape, args.output)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli("hhcl-embed", run, parse_command_line(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
