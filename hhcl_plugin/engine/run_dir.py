"""The output folder of a run: never written over by another run, and held by one process at a time.

A second ``hhcl-train`` with the same ``OUTPUT_DIR`` used to replace the first run's
``metrics.json``, ``config.yaml`` and even ``best.pth`` (its best mAP starts from -1).
Hugging Face's ``Trainer`` refuses a non-empty output folder for the same reason. Here a
fresh run refuses a folder that holds a run, ``--resume`` continues it, ``--move-aside``
renames it to a fresh sibling first (nothing is ever deleted), and ``--eval-only``
writes into a numbered folder of its own under ``OUTPUT_DIR/eval``.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from typing import Any, Dict, List, Optional

from yacs.config import CfgNode

from ..utils import comm
from ..utils.errors import UserError
from ..utils.paths import check_weights, check_writable_dir, write_atomically
from .checkpoint import previous_path

logger = logging.getLogger(__name__)

LAST = "last.pth"
RUN_FILES = (LAST, previous_path(LAST), "best.pth", "metrics.json")  # what makes a folder hold a run
LOCK = "run.lock"
EVAL_FOLDER = "eval"
RESULTS = "results.json"

_held: List[str] = []  # lock files this process holds


def check_run_paths(cfg: CfgNode) -> None:
    """The run's own paths (``MODEL.WEIGHTS``, then ``OUTPUT_DIR``, which the check creates), before any work;
    the data's are the data's (``hhcl_plugin.data.check_data_paths``)."""
    check_weights(cfg.MODEL.WEIGHTS)
    check_writable_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")


def run_files(folder: str) -> List[str]:
    """The files of an earlier run in ``folder``."""
    return [name for name in RUN_FILES if os.path.isfile(os.path.join(folder, name))]


def prepare_output_dir(folder: str, resume: bool = False, eval_only: bool = False, move_aside: bool = False) -> str:
    """The folder this run writes to, locked for training runs; refuses what would overwrite a run."""
    if sum((resume, eval_only, move_aside)) > 1:
        raise UserError("--resume, --eval-only and --move-aside exclude each other; give one of them")
    if eval_only:
        return new_eval_dir(folder)
    os.makedirs(folder, exist_ok=True)
    acquire_lock(folder)
    try:
        found = run_files(folder)
        if resume and not {LAST, previous_path(LAST)} & set(found):
            keep = " (add --move-aside to keep the files already there)" if found else ""
            raise UserError(f"--resume given but {os.path.join(folder, LAST)} does not exist; "
                            f"drop --resume to start a new run{keep}")
        if found and not resume:
            if not move_aside:
                raise UserError(
                    f"OUTPUT_DIR {folder} holds an earlier run ({', '.join(found)}); continue it with --resume, "
                    f"set another OUTPUT_DIR, or add --move-aside to rename it to a new sibling folder first")
            moved = move_aside_run(folder)  # our lock moves with it, and stays ours for the new folder
            _remove(os.path.join(moved, LOCK))
            os.makedirs(folder)
            acquire_lock(folder)
    except BaseException:
        release_lock(folder)
        raise
    return folder


def move_aside_run(folder: str) -> str:
    """Rename ``folder`` to the first free ``<folder>.old-N`` next to it; return the new name."""
    folder = os.path.abspath(folder)
    n = 1
    while os.path.exists(f"{folder}.old-{n}"):
        n += 1
    target = f"{folder}.old-{n}"
    os.rename(folder, target)
    logger.warning("moved the earlier run in %s aside to %s", folder, target)
    return target


def new_eval_dir(folder: str) -> str:
    """A new ``OUTPUT_DIR/eval/N`` (the first free N), created atomically so concurrent evaluations differ."""
    parent = os.path.join(folder, EVAL_FOLDER)
    os.makedirs(parent, exist_ok=True)
    n = 1 + max((int(name) for name in os.listdir(parent) if name.isdigit()), default=0)
    while True:
        target = os.path.join(parent, str(n))
        try:
            os.mkdir(target)
            return target
        except FileExistsError:
            n += 1


def shared_output_dir(folder: str, resume: bool = False, eval_only: bool = False, move_aside: bool = False) -> str:
    """:func:`prepare_output_dir` on rank 0; every rank gets its folder, or raises its error."""
    outcome: Dict[str, Any] = {"folder": folder, "error": None}
    if comm.is_main_process():
        try:
            outcome["folder"] = prepare_output_dir(folder, resume, eval_only, move_aside)
        except UserError as e:
            outcome["error"] = str(e)
    outcome = comm.broadcast_object(outcome)
    if outcome["error"]:
        raise UserError(outcome["error"])
    return outcome["folder"]


def write_json(path: str, content: Any) -> str:
    """``content`` as JSON in ``path``, written whole or not at all (a crash or a full disk leaves the previous file)."""
    data = json.dumps(content, indent=2).encode()
    return write_atomically(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> str:
    """``text`` in ``path``, written whole or not at all."""
    data = text.encode()
    return write_atomically(path, lambda f: f.write(data))


def write_results(folder: str, results: Dict[str, Any]) -> str:
    """``folder/results.json`` of an evaluation."""
    return write_json(os.path.join(folder, RESULTS), results)


# ---------------------------------------------------------------------------- lock
def _process_start(pid: int) -> Optional[str]:
    """When ``pid`` started (Linux clock ticks since boot), to tell a reused pid from the lock's owner."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _is_stale(holder: Dict[str, Any], path: str) -> bool:
    """A lock of this host whose process is gone (or is another process with a reused pid)."""
    if holder.get("host") != socket.gethostname():
        return False  # cannot tell from here
    pid = int(holder.get("pid", -1))
    if pid == os.getpid():
        return path not in _held
    if not _alive(pid):
        return True
    started = _process_start(pid)
    return holder.get("started") is not None and started is not None and started != holder["started"]


def acquire_lock(folder: str, lock_name: str = LOCK, label: str = "OUTPUT_DIR", holder_kind: str = "run") -> None:
    """Hold ``folder/<lock_name>`` (pid, host, start) for this process, replacing a stale one.

    ``label`` and ``holder_kind`` name the folder and its user in the refusal (``OUTPUT_DIR``
    and ``run`` for training; ``--gallery`` and ``writer`` for a gallery).
    """
    path = os.path.abspath(os.path.join(folder, lock_name))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(me, f)
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)  # atomic, and the lock file is complete when it appears
                break
            except FileExistsError:
                holder = _read_lock(path)
                if holder is not None and not _is_stale(holder, path):
                    raise UserError(
                        f"{label} {folder} is in use by another {holder_kind} (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}); wait for it to end or set another "
                        f"{label}. If that {holder_kind} is gone, delete {path}") from None
                logger.warning("removing the stale lock %s left by %s", path, holder)
                _remove(path)
    finally:
        _remove(tmp)
    if path not in _held:
        if not _held:
            atexit.register(_release_all)
        _held.append(path)


def release_lock(folder: str, lock_name: str = LOCK) -> None:
    path = os.path.abspath(os.path.join(folder, lock_name))
    if path in _held:
        _held.remove(path)
        holder = _read_lock(path)
        if holder is not None and holder.get("pid") == os.getpid():
            _remove(path)


def _release_all() -> None:
    for path in list(_held):
        release_lock(os.path.dirname(path), os.path.basename(path))


def _read_lock(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
