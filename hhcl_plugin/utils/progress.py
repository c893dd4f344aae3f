"""The progress bar of every long loop."""
from __future__ import annotations

import sys
from typing import Iterable

from tqdm import tqdm


def progress(iterable: Iterable, **kwargs) -> tqdm:
    """tqdm that stays silent when stderr is not a terminal (log files, CI, benchmarks)."""
    return tqdm(iterable, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False, **kwargs)
