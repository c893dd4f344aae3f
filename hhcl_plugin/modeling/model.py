"""The embedding model: backbone + re-ID head, giving L2-normalised features."""
from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from .backbones import build_backbone
from .batch_norm import convert_split_batchnorm
from .heads import ReIDHead


class ReIDModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: ReIDHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def feat_dim(self) -> int:
        return self.head.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def build_model(cfg: CfgNode) -> ReIDModel:
    backbone = build_backbone(cfg)
    head = ReIDHead(backbone.out_channels, cfg.MODEL.POOLING, cfg.MODEL.EMBEDDING_DIM, cfg.MODEL.GEM_P)
    model = ReIDModel(backbone, head)
    return convert_split_batchnorm(model, cfg.MODEL.BN_SPLIT) if cfg.MODEL.BN_SPLIT > 1 else model


def resolve_device(cfg: CfgNode) -> torch.device:
    """``auto`` picks CUDA when visible; asking for CUDA without one is a user error."""
    from ..utils.errors import ConfigError

    want = cfg.MODEL.DEVICE
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE is cuda but no CUDA device is visible; use MODEL.DEVICE cpu or auto")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)
