"""Loading configs: defaults, ``_BASE_`` inheritance, command-line overrides, value rules."""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from yacs.config import CfgNode

from ..utils.errors import ConfigError
from .checks import AUTO, EPS, RELATIONS, RULES, Rule, check_values, config_keys
from .defaults import _C

BASE_KEY = "_BASE_"
# keys that take a number or a word (CLUSTER.EPS: a float or "auto"); yacs types a key by its default and would
# refuse the other kind, so they are set past its type check and checked by check_cfg
NUMBER_OR_WORD_KEYS = ("CLUSTER.EPS",)
EpsSetting = Union[float, str]


Relation = Tuple[Tuple[str, ...], Callable[..., bool], str]


class HHCLConfig(CfgNode):
    """The plugin's config object: a yacs ``CfgNode`` whose loading methods are the plugin's.

    detectron2's habit ``cfg.merge_from_file(path); cfg.merge_from_list(opts)`` follows
    ``_BASE_`` chains and takes ``CLUSTER.EPS auto``, as :func:`setup_cfg` does, and a project
    adds value rules for its own keys next to the keys themselves::

        def add_myproject_config(cfg):
            cfg.MYPROJECT = CfgNode()
            cfg.MYPROJECT.WEIGHT = 1.0
            cfg.add_rules({"MYPROJECT.WEIGHT": Number(lo=0)})

    :func:`check_cfg` (which :func:`setup_cfg` and ``default_setup`` run) applies them with
    the plugin's own; ``clone()`` keeps them.
    """

    # Only the root is an HHCLConfig; its nodes stay yacs' own CfgNode, the type a project's
    # ``cfg.MYPROJECT = CfgNode()`` adds, so yacs' merge (which wants equal types) takes both.
    @classmethod
    def _create_config_tree_from_dict(cls, dic: Dict[str, Any], key_list: List[str]) -> Dict[str, Any]:
        return CfgNode._create_config_tree_from_dict(dic, key_list)

    @classmethod
    def _decode_cfg_value(cls, value: Any) -> Any:
        return CfgNode._decode_cfg_value(value)

    def merge_from_file(self, cfg_filename: str) -> "HHCLConfig":  # type: ignore[override]
        """Merge a YAML file, following its ``_BASE_`` chain (:func:`merge_from_file`)."""
        return merge_from_file(self, cfg_filename)

    def merge_from_list(self, cfg_list: Sequence[Any]) -> "HHCLConfig":  # type: ignore[override]
        """Merge ``KEY VALUE`` pairs (:func:`merge_from_list`)."""
        return merge_from_list(self, cfg_list)

    def add_rules(self, rules: Dict[str, Rule], relations: Sequence[Relation] = ()) -> None:
        """Value rules for a project's keys (``checks.Rule`` objects), and checks across keys as
        ``(keys, holds, what should hold)``, as in ``checks.RELATIONS``."""
        unknown = [key for key in rules if key not in config_keys(self)]
        if unknown:
            raise ValueError(f"rules for keys the config does not have: {', '.join(unknown)}; add the keys first")
        self.__dict__.setdefault("_project_rules", {}).update(rules)
        self.__dict__["_project_relations"] = [*self.__dict__.get("_project_relations", []), *relations]

    def value_rules(self) -> Tuple[Dict[str, Rule], List[Relation]]:
        """The plugin's rules and relations with the project's added."""
        return ({**RULES, **self.__dict__.get("_project_rules", {})},
                [*RELATIONS, *self.__dict__.get("_project_relations", [])])


def get_cfg() -> HHCLConfig:
    """A fresh, mutable copy of the defaults, as the plugin's config object."""
    return HHCLConfig(_C)


def _load_yaml_with_base(path: str, _seen: Optional[List[str]] = None) -> Dict[str, Any]:
    path = os.path.abspath(path)
    seen = list(_seen or [])
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through _BASE_: {' -> '.join(seen + [path])}")
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder; give a YAML file, e.g. configs/hhcl_synth.yml")
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _floats_where_floats(cfg: CfgNode, data: Dict[str, Any]) -> None:
    """An integer given for a float key (``BASE_LR: 1``) becomes that float, in place, as people type it.

    yacs types a key by its default and would refuse ``1`` where ``0.001`` stood.
    """
    for key, value in data.items():
        current = cfg.get(key) if isinstance(cfg, CfgNode) else None
        if isinstance(value, dict) and isinstance(current, CfgNode):
            _floats_where_floats(current, value)
        elif isinstance(current, float) and _is_int(value):
            data[key] = float(value)


def _float_override(cfg: CfgNode, key: str, value: Any) -> Any:
    """A command-line value, as a float where ``key`` holds a float and the value is an integer."""
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, CfgNode) else None
    if not isinstance(node, float):
        return value
    decoded = CfgNode._decode_cfg_value(value) if isinstance(value, str) else value
    return float(decoded) if _is_int(decoded) else value


def merge_from_file(cfg: CfgNode, path: str) -> CfgNode:
    """Merge a YAML file (following ``_BASE_`` chains) into ``cfg``."""
    data = _load_yaml_with_base(path)
    _floats_where_floats(cfg, data)
    untyped = {key: _pop_nested(data, key) for key in NUMBER_OR_WORD_KEYS}
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate_yacs_error(e, path) from None
    for key, value in untyped.items():
        if value is not _MISSING:
            _set_untyped(cfg, key, value)
    return cfg


def merge_from_list(cfg: CfgNode, opts: Sequence[str]) -> CfgNode:
    """Merge ``KEY VALUE`` pairs given on the command line."""
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd number: {list(opts)}")
    pairs = list(zip(opts[0::2], opts[1::2]))
    typed = [item for key, value in pairs if key not in NUMBER_OR_WORD_KEYS
             for item in (key, _float_override(cfg, key, value))]
    try:
        CfgNode.merge_from_list(cfg, typed)  # yacs' own (HHCLConfig's is this function)
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate_yacs_error(e, "command-line overrides") from None
    for key, value in pairs:
        if key in NUMBER_OR_WORD_KEYS:
            _set_untyped(cfg, key, CfgNode._decode_cfg_value(value))
    return cfg


_MISSING = object()


def _pop_nested(data: Dict[str, Any], key: str) -> Any:
    """Remove ``data["A"]["B"]`` for ``key = "A.B"`` and return it (``_MISSING`` when absent)."""
    *parents, last = key.split(".")
    for part in parents:
        data = data.get(part)
        if not isinstance(data, dict):
            return _MISSING
    return data.pop(last, _MISSING)


def _set_untyped(cfg: CfgNode, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        cfg = cfg[part]
    cfg[last] = float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def freeze_checked(cfg: CfgNode) -> CfgNode:
    """``cfg`` checked (:func:`check_cfg`) and frozen: the one place a config is frozen."""
    check_cfg(cfg)
    cfg.freeze()
    return cfg


def with_values(cfg: CfgNode, values: Dict[str, Any]) -> CfgNode:
    """A checked, frozen copy of ``cfg`` with the dotted keys of ``values`` set (``None`` values skipped);
    ``cfg`` itself when there is nothing to set.  How a run's folder and ``run()``'s arguments enter its config."""
    opts = [item for key, value in values.items() if value is not None
            for item in (key, repr(value) if isinstance(value, str) else list(value) if isinstance(value, tuple)
                         else value)]
    if not opts:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    merge_from_list(cfg, opts)
    return freeze_checked(cfg)


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
    return freeze_checked(cfg)


def check_cfg(cfg: CfgNode) -> None:
    """Value checks yacs cannot express (it only checks types): every key's rule in ``checks.RULES``,
    and the rules a project added with :meth:`HHCLConfig.add_rules`."""
    if isinstance(cfg, HHCLConfig):
        check_values(cfg, *cfg.value_rules())
    else:
        check_values(cfg)


def check_eps(value: EpsSetting, name: str = "CLUSTER.EPS") -> EpsSetting:
    """``value`` as a float in (0, 1), or ``AUTO``; a ConfigError naming ``name`` otherwise (``checks.EPS``)."""
    if not EPS.accepts(value):
        raise ConfigError(f"{name} is {value!r}, expected {EPS.expected}")
    return value if value == AUTO else float(value)
