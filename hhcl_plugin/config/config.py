"""Loading configs: defaults, ``_BASE_`` inheritance, command-line overrides."""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional, Sequence

import yaml
from yacs.config import CfgNode

from ..utils.errors import ConfigError
from .defaults import _C

BASE_KEY = "_BASE_"


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def _load_yaml_with_base(path: str, _seen: Optional[List[str]] = None) -> Dict[str, Any]:
    path = os.path.abspath(path)
    seen = list(_seen or [])
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through _BASE_: {' -> '.join(seen + [path])}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not os.path.isabs(base):
        base = os.path.join(os.path.dirname(path), base)
    merged = _load_yaml_with_base(base, seen + [path])
    _merge_dicts(merged, data)
    return merged


def _merge_dicts(dst: Dict[str, Any], src: Dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_dicts(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _translate_yacs_error(err: Exception, origin: str) -> ConfigError:
    msg = str(err).strip("'\"")
    if msg.startswith(("Non-existent config key:", "Non-existent key:")):
        key = msg.split(":", 1)[1].strip()
        return ConfigError(f"unknown config key '{key}' in {origin}; see hhcl_plugin/config/defaults.py for the valid keys")
    if msg.startswith("Type mismatch"):
        return ConfigError(f"wrong value type in {origin}: {msg}")
    return ConfigError(f"invalid config in {origin}: {msg}")


def merge_from_file(cfg: CfgNode, path: str) -> CfgNode:
    """Merge a YAML file (following ``_BASE_`` chains) into ``cfg``."""
    data = _load_yaml_with_base(path)
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate_yacs_error(e, path) from None
    return cfg


def merge_from_list(cfg: CfgNode, opts: Sequence[str]) -> CfgNode:
    """Merge ``KEY VALUE`` pairs given on the command line."""
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd number: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate_yacs_error(e, "command-line overrides") from None
    return cfg


def setup_cfg(config_file: str = "", opts: Sequence[str] = (), cfg: Optional[CfgNode] = None) -> CfgNode:
    """Defaults, then the config file, then the overrides; frozen and checked.

    A project with its own keys passes its extended defaults as ``cfg``, the way detectron2's
    projects do: ``cfg = get_cfg(); add_myproject_config(cfg); setup_cfg(file, opts, cfg)``,
    where ``add_myproject_config`` adds a ``CfgNode`` of the project's keys with their defaults.
    The names of registered parts (``ENGINE``, ``MEMORY.MODE``, ...) are checked by
    ``hhcl_plugin.engine.defaults.default_setup``, which knows the registries.
    """
    cfg = get_cfg() if cfg is None else cfg
    if config_file:
        merge_from_file(cfg, config_file)
    merge_from_list(cfg, opts)
    check_cfg(cfg)
    cfg.freeze()
    return cfg


def check_cfg(cfg: CfgNode) -> None:
    """Value checks yacs cannot express (it only checks types)."""
    choices = {
        "MODEL.DEVICE": ("auto", "cpu", "cuda"),
        "MODEL.POOLING": ("avg", "gem", "max"),
        "CLUSTER.JACCARD": ("sparse", "dense"),
        "CLUSTER.KNN_INDEX": ("exact", "ivf"),
        "SOLVER.AMP": ("off", "fp16", "bf16"),
        "DATALOADER.ON_BAD_IMAGE": ("error", "skip"),
    }
    for key, allowed in choices.items():
        value = _value(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key} is '{value}', expected one of {', '.join(allowed)}")
    if cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCES:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple of "
            f"DATALOADER.NUM_INSTANCES ({cfg.DATALOADER.NUM_INSTANCES})"
        )
    if not 0 < cfg.CLUSTER.EPS < 1:
        raise ConfigError(f"CLUSTER.EPS is {cfg.CLUSTER.EPS}; the Jaccard distance lies in [0, 1], use 0 < EPS < 1")
    if not 0 <= cfg.TEST.RERANK_LAMBDA <= 1 or cfg.TEST.RERANK_K1 < 1 or cfg.TEST.RERANK_K2 < 1:
        raise ConfigError(f"TEST.RERANK_LAMBDA must be in [0, 1] and TEST.RERANK_K1, TEST.RERANK_K2 >= 1; got "
                          f"{cfg.TEST.RERANK_LAMBDA}, {cfg.TEST.RERANK_K1}, {cfg.TEST.RERANK_K2}")
    if not cfg.DATASETS.NAMES:
        raise ConfigError("DATASETS.NAMES is empty; name at least one dataset, e.g. market1501 or synthreid")


def _value(cfg: CfgNode, key: str) -> Any:
    """``cfg.A.B`` for ``key = "A.B"``."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg
