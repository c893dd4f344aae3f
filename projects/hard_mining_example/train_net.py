"""Launcher of the project: ``python projects/hard_mining_example/train_net.py --config-file ... KEY VALUE ...``.

The plugin's ``hhcl-train`` with the project's parts registered and its keys added.
"""
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hard_mining import add_hard_mining_config  # noqa: E402  (registers the memory mode and the engine)
from hhcl_plugin.config import get_cfg  # noqa: E402
from hhcl_plugin.tools.train import main as train_main  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    cfg = get_cfg()
    add_hard_mining_config(cfg)
    return train_main(argv, cfg=cfg)


if __name__ == "__main__":
    sys.exit(main())
