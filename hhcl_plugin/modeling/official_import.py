"""Checkpoints of the official HHCL and Cluster-Contrast code, renamed to this plugin's model.

Their ResNet keeps the torchvision trunk in one ``nn.Sequential`` named ``base``
(conv1, bn1, relu, maxpool, layer1..layer4 at positions 0..7), GeM's exponent in
``gap.p``, an optional ``feat`` Linear and the BatchNorm neck ``feat_bn``; files are
``{"state_dict": ..., "epoch": ..., "best_mAP": ...}`` saved from ``nn.DataParallel``
(``module.`` prefixes, stripped before this runs).  Inside the layers the names are
torchvision's, which torchreid's ResNet and IBN-ResNet share, so only the outer names
change.
"""
from __future__ import annotations

import re
from typing import Dict

import torch

_BASE = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_HEAD = {"feat_bn": "head.neck", "feat": "head.embedding", "gap": "head.pool"}


def is_official_layout(state: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("base.") for k in state) and any(k.startswith("feat_bn.") for k in state)


def convert_official_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an official state dict (without ``module.``) to this plugin's ``ReIDModel`` keys.

    The classifier of their supervised variants has no counterpart and is dropped.
    """
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"base\.(\d+)\.(.+)", key)
        if m and m.group(1) in _BASE:
            out[f"backbone.body.{_BASE[m.group(1)]}.{m.group(2)}"] = value
            continue
        head, _, rest = key.partition(".")
        if head in _HEAD:
            out[f"{_HEAD[head]}.{rest}"] = value
    return out
