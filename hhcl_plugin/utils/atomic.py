"""Files written whole or not at all: a temporary file in the same folder, fsync, then a rename.

A crash, SIGKILL or full disk in the middle of writing leaves the previous file (or none),
never a truncated one that a later run would read as valid.
"""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable


def write_atomically(path: str, write: Callable[[BinaryIO], None], suffix: str = ".tmp",
                     before_replace: Callable[[], None] = lambda: None) -> None:
    """``write(f)`` into a temporary file next to ``path``, flushed to disk, then renamed over ``path``.

    ``before_replace`` runs after the data is on disk and right before the rename (e.g. to keep
    the file being replaced under a second name).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the result is an ordinary file
        before_replace()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def fsync_dir(folder: str) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
