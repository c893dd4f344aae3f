"""Backbone registry: a backbone turns an image batch into a feature map (B, C, H, W)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from ...utils.errors import ConfigError
from ...utils.registry import Registry

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registered callables take ``(cfg, arch)`` and return an ``nn.Module`` whose forward
gives a feature map and which has an ``out_channels`` attribute.  A name ``family:arch``
(e.g. ``timm:resnet50d``) calls the family's builder with ``arch``; a plain name calls
its own builder with ``arch`` equal to the name.
"""


def build_backbone(cfg: CfgNode) -> nn.Module:
    name = cfg.MODEL.BACKBONE.NAME
    family, _, arch = name.partition(":")
    key = family if arch else name
    if key not in BACKBONE_REGISTRY:
        raise ConfigError(
            f"unknown backbone '{name}' (MODEL.BACKBONE.NAME). Use a registered name "
            f"({', '.join(n for n in BACKBONE_REGISTRY.names())}) or 'timm:<any timm model>'"
        )
    backbone = BACKBONE_REGISTRY.get(key)(cfg, arch or name)
    if not hasattr(backbone, "out_channels"):
        backbone.out_channels = infer_out_channels(backbone)
    return backbone


@torch.no_grad()
def infer_out_channels(backbone: nn.Module, size: Tuple[int, int] = (64, 32)) -> int:
    """Channel count of the feature map, found with one tiny forward pass."""
    was_training = backbone.training
    backbone.eval()
    out = backbone(torch.zeros(1, 3, *size))
    backbone.train(was_training)
    return int(out.shape[1])
