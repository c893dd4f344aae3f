"""What the command-line tools share: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from ..utils import comm
from ..utils.errors import UserError


def one_line(error: Exception) -> str:
    """The message of a user error, also when a DataLoader worker wrapped it in its traceback."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split(f"{type(error).__name__}: ", 1)[-1]


def run_cli(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
            on_interrupt: str = "interrupted") -> int:
    try:
        return run(args)
    except UserError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {on_interrupt}", file=sys.stderr)
        return 130
    finally:
        comm.shutdown()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, anywhere on the line")


def parse_command_line(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Flags and ``KEY VALUE`` overrides in any order (``... MODEL.WEIGHTS W --output F`` works)."""
    return parser.parse_intermixed_args(argv)
