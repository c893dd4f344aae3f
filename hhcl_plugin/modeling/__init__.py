"""Models: registered backbones and the re-ID head."""
from .backbones import BACKBONE_REGISTRY, build_backbone
from .batch_norm import SplitBatchNorm, convert_split_batchnorm
from .heads import GeneralizedMeanPooling, ReIDHead
from .model import ReIDModel, build_model, resolve_device
from .torchreid_model import TorchreidEmbedding, as_embedding_model

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "GeneralizedMeanPooling", "ReIDHead", "ReIDModel",
           "build_model", "resolve_device", "SplitBatchNorm", "convert_split_batchnorm", "TorchreidEmbedding",
           "as_embedding_model"]
