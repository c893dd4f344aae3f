"""Checkpoints that survive a crash mid-write and load with ``weights_only=True``.

Everything is stored as tensors, numbers, strings, lists and dicts, so loading never
needs to unpickle arbitrary objects.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from typing import Any, Dict, Mapping

import numpy as np
import torch
from torch import nn

from ..modeling.official_import import convert_official_state_dict, is_official_layout
from ..modeling.zoo import resolve_weights
from ..utils import paths
from ..utils.errors import WeightsError

logger = logging.getLogger(__name__)


def previous_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.prev{ext}"


def save_checkpoint(state: Mapping[str, Any], path: str, keep_previous: bool = False) -> None:
    """Write to a temporary file in the same folder, then atomically rename over ``path``.

    With ``keep_previous`` the checkpoint being replaced is kept as ``<name>.prev.pth``, so
    a file damaged later (a full disk, a bad copy) still leaves one good checkpoint. It is
    kept through a second name (a hard link), so ``path`` exists at every moment, also when
    SIGTERM or Ctrl-C stops the process in the middle.  An OS error (a full disk) is one
    line (:func:`~hhcl_plugin.utils.paths.write_error`) and leaves ``path`` as it was.
    """
    def keep() -> None:
        if keep_previous and os.path.exists(path):
            _keep_as_previous(path)

    paths.write_atomically(path, lambda f: torch.save(dict(state), f), "checkpoint", before_replace=keep)


def _keep_as_previous(path: str) -> None:
    prev = previous_path(path)
    second_name = prev + ".tmp"
    if os.path.exists(second_name):
        os.remove(second_name)
    try:
        os.link(path, second_name)
    except OSError:  # a file system without hard links
        shutil.copy2(path, second_name)
    os.replace(second_name, prev)


def _numpy_scalar_globals() -> list:
    """What unpickling a numpy float needs: torchreid's own checkpoints store their rank-1 as one.

    Data types only (no callable that runs code), so ``weights_only`` stays safe with them.
    """
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 / 1
    names = [multiarray.multiarray.scalar, np.dtype]
    return names + [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType")
                    if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]


def load_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:120]}); "
            f"it may be truncated or not a PyTorch file"
        ) from None


def load_checkpoint_or_previous(path: str) -> Dict[str, Any]:
    """``path``, or its kept predecessor when ``path`` is missing or damaged (with a warning)."""
    try:
        return load_checkpoint(path)
    except WeightsError as e:
        prev = previous_path(path)
        if not os.path.isfile(prev):
            raise
        logger.warning("%s; using the previous checkpoint %s instead", e, prev)
        return load_checkpoint(prev)


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_model_weights(model: nn.Module, spec: str) -> None:
    """Load a model (plugin checkpoint or bare state dict) and name every mismatched key.

    ``spec`` is a local path, an http(s) URL or ``zoo:NAME`` (downloaded and verified once).
    """
    path = resolve_weights(spec)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} has no model weights (expected a 'model' or 'state_dict' entry of tensors)")
    state = _strip_prefixes(state)
    if is_official_layout(state):
        logger.info("%s is an official HHCL / Cluster-Contrast checkpoint: renaming its keys", path)
        state = convert_official_state_dict(state)
    own = model.state_dict()
    source_classifier = [k for k in state if k.startswith("classifier.") and k not in own]
    if source_classifier:  # a supervised (source-domain) model's identity classifier: no use without its classes
        logger.info("%s: dropping its identity classifier (%s)", path, ", ".join(source_classifier))
        state = {k: v for k, v in state.items() if k not in source_classifier}
    # one-element tensors whose shape alone differs: the official GeM stores its exponent as (1,), ours is ()
    state = {k: v.reshape(own[k].shape) if k in own and v.numel() == 1 == own[k].numel() else v
             for k, v in state.items()}
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    if mismatched or len(missing) == len(own):
        detail = "; ".join(mismatched[:5]) if mismatched else f"none of the model's keys (e.g. {missing[0]})"
        raise WeightsError(f"{path} does not fit this model: {detail}. Check MODEL.BACKBONE.NAME and MODEL.EMBEDDING_DIM")
    model.load_state_dict(state, strict=False)
    if missing:
        logger.warning("%s lacks %d model keys (kept at initialisation), e.g. %s", path, len(missing), missing[:3])
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        logger.warning("%s has %d keys the model does not use, e.g. %s", path, len(unexpected), unexpected[:3])


def rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
