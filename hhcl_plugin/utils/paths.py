"""Checks of the paths a user gives, before any work, so a typo costs seconds and not a run.

Without them a wrong path surfaced as ``FileExistsError`` or ``FileNotFoundError`` after the
data had been read, or after the features had been computed.
"""
from __future__ import annotations

import os
import tempfile
from typing import IO, Callable, Dict, Optional

from .errors import OutputPathError, UserError, WeightsError

# folders and files this process writes, by absolute path, with the key or flag that set them:
# an OSError under one of them names that key (describe_os_error)
_OUTPUTS: Dict[str, str] = {}


def register_output(path: str, name: str) -> None:
    """Remember that ``path`` (and what lies under it) was set by ``name`` (a config key or a flag)."""
    _OUTPUTS[os.path.abspath(path)] = name


def output_key(path: str) -> Optional[str]:
    """The key or flag that set the registered output ``path`` lies in, if any."""
    path = os.path.abspath(path)
    found = [root for root in _OUTPUTS if path == root or path.startswith(root.rstrip(os.sep) + os.sep)]
    return _OUTPUTS[max(found, key=len)] if found else None


def describe_os_error(error: OSError) -> Optional[str]:
    """One line for an OSError on a path this process writes (a registered output); None for any other."""
    path = error.filename if isinstance(error.filename, str) else None
    key = output_key(path) if path else None
    if key is None:
        return None
    return f"cannot write {path} (under {key}): {error.strerror or error}; give a {key} on a disk with room " \
           f"that you can write to"


def write_atomically(path: str, write: Callable[[IO[bytes]], None], what: str = "",
                     before_replace: Callable[[], None] = lambda: None) -> str:
    """Write ``path`` through a temporary file in its folder, then rename it over ``path``.

    A crash or an OS error (a full disk, a read-only file system) leaves the previous file
    as it was; the error is one line naming the path, the key that set it and the OS's reason,
    and says that the previous file is intact.  ``before_replace`` runs once the data is on disk,
    right before the rename (e.g. to keep the file being replaced under a second name).
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
        with open_for_write(fd) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; an output is an ordinary file
        before_replace()
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise write_error(path, e, what) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    fsync_dir(folder)
    return path


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


def open_for_write(fd: int) -> IO[bytes]:
    """The temporary file of :func:`write_atomically` (a test may point it at ``/dev/full``)."""
    return os.fdopen(fd, "wb")


def write_error(path: str, error: OSError, what: str = "") -> OutputPathError:
    """The one-line error of a failed write of ``path``, saying whether an earlier version is intact."""
    key = output_key(path)
    where = f" (under {key})" if key else ""
    kept = f"the previous {os.path.basename(path)} is intact" if os.path.isfile(path) else "nothing was written"
    label = f"{what} " if what else ""
    return OutputPathError(f"cannot write {label}{path}{where}: {error.strerror or error}; {kept}. "
                           f"Free space or fix the folder's permissions, then run again")


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable_dir(path: str, name: str) -> None:
    """``path`` is a folder we can write in: created if missing, and a file written and removed in it.

    Asking ``os.access`` is not enough: it says yes to root on a read-only file system
    or under ``/proc``; only creating the folder and a file in it tells.
    """
    if not path:
        raise UserError(f"{name} is empty; give a folder to write to")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{name} {path} is a file, not a folder; give a folder, or remove the file")
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise UserError(f"{name} {path} cannot be created: {existing} is a file; give a folder elsewhere")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"{name} {path} cannot be created: {e.strerror or e}; "
                              f"give a folder you can write to") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputPathError(f"{name} {path} cannot be written: {e.strerror or e}; "
                              f"give a folder you can write to") from None
    register_output(path, name)


def check_writable_file(path: str, name: str) -> None:
    """``path`` is a regular file we can (over)write, in a folder that exists or can be created."""
    if os.path.isdir(path):
        raise UserError(f"{name} {path} is a folder; give the name of a file to write, in it or elsewhere")
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"{name} {path} exists and is not a regular file (a device or a pipe); "
                        f"give the name of a file to write")
    if os.path.exists(path):
        try:
            with open(path, "ab"):  # opened for writing, nothing written: the file stays as it is
                pass
        except OSError as e:
            raise OutputPathError(f"{name} {path} exists and cannot be written: {e.strerror or e}") from None
    existing = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(existing):
        raise UserError(f"{name} {path} cannot be created: {existing} is a file; give a path in a folder")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"the folder of {name} {path}:")
    register_output(path, name)


def make_parent(path: str) -> None:
    """Create the folder of ``path`` (checked by :func:`check_writable_file` already; an OSError is one line)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None


def check_weights(spec: str) -> None:
    """A local ``MODEL.WEIGHTS`` exists and is a file; URLs and ``zoo:`` names are resolved when loaded."""
    if not spec or spec.startswith(("zoo:", "http://", "https://")):
        return
    if not os.path.exists(spec):
        raise WeightsError(f"MODEL.WEIGHTS {spec} does not exist; give a checkpoint file, a URL or zoo:NAME")
    if not os.path.isfile(spec):
        raise WeightsError(f"MODEL.WEIGHTS {spec} is a folder; give the checkpoint file in it, e.g. "
                           f"{os.path.join(spec, 'best.pth')}")
    if not os.access(spec, os.R_OK):
        raise WeightsError(f"MODEL.WEIGHTS {spec} cannot be read (no read permission)")


def check_dataset_root(root: str, names: "tuple[str, ...]", generated: bool) -> None:
    """``DATASETS.ROOT`` is a folder; one the built-in dataset will be generated in must be writable.

    Missing datasets under an existing root are named by the dataset layout check.
    """
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"DATASETS.ROOT {root} is a file, not a folder; set DATASETS.ROOT to the folder of the datasets")
    if not generated and "synthreid" in names:
        check_writable_dir(root, "DATASETS.ROOT (where synthreid is generated)")
