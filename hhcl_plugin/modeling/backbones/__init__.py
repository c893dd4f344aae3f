from . import timm_backbones, torchreid_backbones  # noqa: F401  (registration)
from .build import BACKBONE_REGISTRY, build_backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]
