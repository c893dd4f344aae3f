"""Every torchreid model, registered as a backbone under its torchreid name."""
from __future__ import annotations

from torch import nn
from yacs.config import CfgNode

from ...utils import torchreid_compat as tr
from ...utils.errors import ConfigError
from .build import BACKBONE_REGISTRY
from .pretrained import download_guard


class TorchreidBackbone(nn.Module):
    """Wraps a torchreid model and exposes its ``featuremaps``; its classifier is dropped."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        if not hasattr(body, "featuremaps"):
            raise ConfigError(f"torchreid model {type(body).__name__} has no featuremaps(); pick another backbone")
        if hasattr(body, "classifier"):
            body.classifier = nn.Identity()  # unused parameters would break DDP and weight decay
        self.body = body

    def forward(self, x):
        return self.body.featuremaps(x)


def unstride_layer4(body: nn.Module) -> None:
    """Keep layer4 at the resolution of layer3 (standard in re-ID: finer part detail)."""
    block = body.layer4[0]
    for module in (getattr(block, "conv1", None), getattr(block, "conv2", None)):
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)
    if getattr(block, "downsample", None) is not None:
        for module in block.downsample.modules():
            if isinstance(module, nn.Conv2d):
                module.stride = (1, 1)


def build_torchreid_backbone(cfg: CfgNode, arch: str) -> nn.Module:
    with download_guard(arch, enabled=cfg.MODEL.BACKBONE.PRETRAINED):
        body = tr.build_torchreid_model(arch, num_classes=1, loss="softmax",
                                        pretrained=cfg.MODEL.BACKBONE.PRETRAINED)
    if cfg.MODEL.BACKBONE.LAST_STRIDE == 1 and hasattr(body, "layer4"):
        unstride_layer4(body)
    return TorchreidBackbone(body)


for _name in tr.torchreid_model_names():
    BACKBONE_REGISTRY.register(build_torchreid_backbone, name=_name)
