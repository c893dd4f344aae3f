"""Which model made a gallery's vectors, so that vectors of two models are never mixed or compared.

A gallery keeps the whole config it was built with and the path and SHA-256 of its
weights.  Commands that embed (``add``, ``search`` by image) use that config; a config or
weights given on their command line must name the same model: the same weights (by
content) and the same values of every key that changes the features.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Sequence

from yacs.config import CfgNode

from ..config import get_cfg
from ..config.config import check_cfg, merge_from_file, merge_from_list
from ..modeling.zoo import resolve_weights, sha256_of
from ..utils.errors import UserError
from ..utils.paths import check_weights

# keys of MODEL that do not change the features of a trained model (device, speed, training-only)
_RUNTIME_MODEL_KEYS = ("WEIGHTS", "DEVICE", "CHANNELS_LAST", "SYNC_BN", "BN_SPLIT")
# the INPUT keys of the test transform
_FEATURE_INPUT_KEYS = ("SIZE_TEST", "INTERPOLATION", "PIXEL_MEAN", "PIXEL_STD")


class ModelMismatchError(UserError):
    """A command was given another model than the one that made the gallery."""


def feature_config(cfg: CfgNode) -> Dict[str, Any]:
    """The config values that change the features: MODEL (less runtime keys) and the test transform."""
    model = {k: v for k, v in _plain(cfg.MODEL).items() if k not in _RUNTIME_MODEL_KEYS}
    return {"MODEL": model, "INPUT": {k: _plain(cfg.INPUT[k]) for k in _FEATURE_INPUT_KEYS}}


def weights_identity(spec: str) -> Dict[str, str]:
    """``{"weights": spec, "sha256": hash of its content}`` ('' for both when the backbone's initial weights are used)."""
    if not spec:
        return {"weights": "", "sha256": ""}
    check_weights(spec)
    path = resolve_weights(spec)
    return {"weights": os.path.abspath(path) if os.path.exists(path) else spec, "sha256": sha256_of(path)}


def model_identity(cfg: CfgNode) -> Dict[str, Any]:
    """What the gallery stores about its model: the full config (YAML), the feature keys, the weights' hash."""
    return {"config": cfg.dump(), "features": feature_config(cfg), **weights_identity(cfg.MODEL.WEIGHTS)}


def stored_config(identity: Dict[str, Any], config_file: str = "", opts: Sequence[str] = ()) -> CfgNode:
    """The gallery's config, with a user's config file and overrides merged on top (checked, frozen)."""
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(identity["config"]))
    if config_file:
        merge_from_file(cfg, config_file)
    merge_from_list(cfg, opts)
    check_cfg(cfg)
    cfg.freeze()
    return cfg


def check_same_model(identity: Dict[str, Any], cfg: CfgNode, gallery: str, verify_weights: bool) -> None:
    """Refuse ``cfg`` when it is another model than the gallery's (one line naming the difference).

    ``verify_weights``: hash the weights file again (it must also not have changed on disk).
    """
    ours = feature_config(cfg)
    if ours != identity["features"]:
        key = _first_difference(identity["features"], ours)
        raise ModelMismatchError(
            f"gallery {gallery} was built with another model: {key} differs; use the gallery's own model "
            "(give only --gallery), or build a new gallery for this one")
    same_path = cfg.MODEL.WEIGHTS in ("", identity["weights"]) or (
        os.path.exists(cfg.MODEL.WEIGHTS) and os.path.abspath(cfg.MODEL.WEIGHTS) == identity["weights"])
    if not same_path or verify_weights:
        found = weights_identity(cfg.MODEL.WEIGHTS or identity["weights"])["sha256"]
        if found != identity["sha256"]:
            what = "has changed since the gallery was built" if same_path else "are another model's"
            raise ModelMismatchError(
                f"gallery {gallery} was built with weights {identity['weights'] or '(initial)'} (SHA-256 "
                f"{identity['sha256'][:12] or '-'}), the weights given {what} (SHA-256 {found[:12] or '-'}); "
                "use the gallery's own model, or build a new gallery for this one")


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return f"{prefix} ({json.dumps(a)} in the gallery, {json.dumps(b)} given)"


def _plain(value: Any) -> Any:
    """A config value as JSON-comparable data (CfgNode -> dict, tuple -> list)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
