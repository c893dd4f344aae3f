"""Domain adaptation in one command: the labelled source stage, then HHCL on the unlabelled target.

Usage::

    python projects/uda/run.py [--source-config S] [--target-config T] [--direct-transfer]
                               [--source-opts "KEY VALUE ..."] [--target-opts "KEY VALUE ..."] [KEY VALUE ...]

1. ``hhcl-train-source --config-file S`` (torchreid's supervised engine) writes
   ``<source OUTPUT_DIR>/model/model.pth.tar-<MAX_EPOCH>``; skipped when that file exists already;
2. with ``--direct-transfer``, ``hhcl-train --eval-only`` scores the source model on the target;
3. ``hhcl-train --config-file T MODEL.WEIGHTS <that checkpoint>`` adapts it to the target.

Trailing ``KEY VALUE`` overrides go to both stages (e.g. ``DATASETS.ROOT``), ``--source-opts`` and
``--target-opts`` to one.  Each stage is its own process, as if typed by hand; a stage that
fails stops the pipeline with its exit code.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, REPO)

from hhcl_plugin.config import setup_cfg  # noqa: E402
from hhcl_plugin.tools.train_source import source_checkpoint  # noqa: E402


def stage(module: str, config: str, opts: List[str]) -> None:
    cmd = [sys.executable, "-m", module, "--config-file", config, *opts]
    print("+", shlex.join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)})
    if code:
        sys.exit(code)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-config", default=os.path.join(HERE, "configs", "source_synth.yml"))
    parser.add_argument("--target-config", default=os.path.join(HERE, "configs", "target_synth.yml"))
    parser.add_argument("--source-opts", default="", help="overrides for the source stage only")
    parser.add_argument("--target-opts", default="", help="overrides for the target stage(s) only")
    parser.add_argument("--direct-transfer", action="store_true",
                        help="also evaluate the source model on the target before adapting it")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="overrides for both stages")
    args = parser.parse_intermixed_args(argv)
    source_opts = [*args.opts, *shlex.split(args.source_opts)]
    target_opts = [*args.opts, *shlex.split(args.target_opts)]
    weights = source_checkpoint(setup_cfg(args.source_config, source_opts))
    if os.path.isfile(weights):
        print(f"source model {weights} exists: source stage skipped", flush=True)
    else:
        stage("hhcl_plugin.tools.train_source", args.source_config, source_opts)
    if args.direct_transfer:
        stage("hhcl_plugin.tools.train", args.target_config, ["--eval-only", *target_opts, "MODEL.WEIGHTS", weights])
    stage("hhcl_plugin.tools.train", args.target_config, [*target_opts, "MODEL.WEIGHTS", weights])
    return 0


if __name__ == "__main__":
    sys.exit(main())
