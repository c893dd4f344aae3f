"""``--resume`` keeps a run what it was: the given config against the one its checkpoint holds.

A resumed run that silently switched ``MEMORY.MODE`` (or the clustering, the data, the
optimiser) would mix two methods in one run, and its ``config.yaml`` would no longer say
how the first epochs were trained.  So keys that change what is trained must keep the
run's values (or ``--allow-config-changes`` takes the new ones, and the run records it);
keys that only change how long, how often it is evaluated, where or how fast it runs may
change.  Every resume's changes go to ``OUTPUT_DIR/resumes.json``; ``config.yaml`` stays
the config the run started with.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Tuple

import yaml
from yacs.config import CfgNode

from ..utils.errors import ConfigError
from .checkpoint import load_checkpoint_or_previous
from .run_dir import write_json

RESUMES = "resumes.json"
CONFIG = "config.yaml"
ALLOW_FLAG = "--allow-config-changes"

# keys (or prefixes, ending in ".") that may differ on resume: length, evaluation, logging,
# where the data lies and where and how fast the run computes
FREE_KEYS = (
    "OUTPUT_DIR", "SOLVER.MAX_EPOCH", "SOLVER.LOG_PERIOD", "TEST.", "DATALOADER.NUM_WORKERS", "MODEL.DEVICE",
    "MODEL.CHANNELS_LAST", "DATASETS.ROOT", "DETERMINISTIC", "CLUSTER.KNN_BF16_SCREEN",
)

Changes = Dict[str, Tuple[Any, Any]]


def is_free_key(key: str) -> bool:
    """Whether ``key`` may change on resume without changing what the run trains."""
    return any(key == free or (free.endswith(".") and key.startswith(free)) for free in FREE_KEYS)


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(node) if isinstance(node, tuple) else node}


def config_changes(run: Dict[str, Any], given: Dict[str, Any]) -> Changes:
    """``{key: (run's value, given value)}`` of every key whose values differ (1 and 1.0 do not)."""
    old, new = _flatten(run), _flatten(given)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}


def run_config(folder: str, last: str) -> Tuple[Dict[str, Any], int]:
    """The config the run's last checkpoint was trained with (its ``config.yaml`` for older ones), and its epoch."""
    ckpt = load_checkpoint_or_previous(os.path.join(folder, last))
    text = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not text and os.path.isfile(os.path.join(folder, CONFIG)):
        with open(os.path.join(folder, CONFIG)) as f:
            text = f.read()
    return (yaml.safe_load(text) or {}) if text else {}, int(ckpt.get("epoch", 0)) if isinstance(ckpt, dict) else 0


def check_resume_config(cfg: CfgNode, folder: str, last: str, allow_changes: bool) -> Tuple[Changes, int]:
    """The changes against the run's config; a ConfigError naming each key that changes what is trained."""
    run, epoch = run_config(folder, last)
    if not run:
        return {}, epoch
    changes = config_changes(run, yaml.safe_load(cfg.dump()))
    fixed = {key: values for key, values in changes.items() if not is_free_key(key)}
    if fixed and not allow_changes:
        named = "; ".join(f"{key} is {old!r} in the run, {new!r} given" for key, (old, new) in fixed.items())
        raise ConfigError(
            f"--resume would change what the run in {folder} trains: {named}. Give the run's values, start a new "
            f"run (another OUTPUT_DIR, or --move-aside), or add {ALLOW_FLAG} to train on with the new values "
            f"(recorded in {os.path.join(folder, RESUMES)})")
    return changes, epoch


def record_resume(folder: str, changes: Changes, epoch: int, allow_changes: bool) -> str:
    """Append this resume (its changes, whether ``--allow-config-changes`` was given) to ``resumes.json``."""
    path = os.path.join(folder, RESUMES)
    history: List[Dict[str, Any]] = []
    if os.path.isfile(path):
        try:
            with open(path) as f:
                history = json.load(f)
        except (OSError, ValueError):
            history = []
    history.append({
        "time": time.strftime("%Y-%m-%d %H:%M:%S"), "from_epoch": epoch, "allow_config_changes": allow_changes,
        "changes": {key: {"run": old, "given": new} for key, (old, new) in changes.items()},
        "changes_what_is_trained": sorted(key for key in changes if not is_free_key(key)),
    })
    return write_json(path, history)
