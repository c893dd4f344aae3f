"""What the command-line tools share: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator, List, Optional

from ..utils.errors import UserError
from ..utils.paths import describe_os_error


def one_line(error: Exception) -> str:
    """The message of a user error, also when a DataLoader worker wrapped it in its traceback."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split(f"{type(error).__name__}: ", 1)[-1]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same clean-up runs."""


# the signal that stopped the run, set by the handlers below: code that catches the raised
# exception and raises its own error (a library calling back into Python) still ends the run
# as stopped by that signal
_STOP_SIGNALS: List[int] = []


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A scheduler's or ``kill``'s SIGTERM ends the run as Ctrl-C does, instead of killing it unseen.

    Checkpoints are written to a temporary file and renamed, so stopping at any point
    leaves the last finished epoch's ``last.pth`` whole.  SIGINT keeps Python's own
    behaviour (and stays ignored where it is, as in a background job), only recorded.
    """
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return

    def stop(signum: int, frame: object) -> None:
        _STOP_SIGNALS.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stop)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_cli(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
            on_interrupt: Callable[[argparse.Namespace], str] = lambda args: "") -> int:
    """``run(args)``; a user error is one line and exit code 2; SIGTERM and Ctrl-C one line and 128 + signal."""
    _STOP_SIGNALS.clear()
    try:
        with sigterm_as_interrupt():
            return run(args)
    except UserError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # writing under OUTPUT_DIR, DATASETS.ROOT, --output: one line; anything else is a bug
        line = describe_os_error(e)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 2
    except BaseException as e:
        if not isinstance(e, KeyboardInterrupt) and not _STOP_SIGNALS:
            raise
        if _STOP_SIGNALS:
            signum = _STOP_SIGNALS[0]
        else:
            signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        if _is_main_process():
            advice = on_interrupt(args)
            print(f"{prog}: stopped by {signal.Signals(signum).name}" + (f"; {advice}" if advice else ""),
                  file=sys.stderr)
        return 128 + signum
    finally:
        if "torch" in sys.modules:  # a run that got as far as torch may have a process group to end
            from ..utils import comm

            comm.shutdown()


def _is_main_process() -> bool:
    if "torch" not in sys.modules:
        return True
    from ..utils import comm

    return comm.is_main_process()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, anywhere on the line")


def parse_command_line(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Flags and ``KEY VALUE`` overrides in any order (``... MODEL.WEIGHTS W --output F`` works)."""
    return parser.parse_intermixed_args(argv)
