"""Loss registry (``LOSS.NAMES``): the memory's loss and camera-aware proxies."""
from .build import LOSS_REGISTRY, Clustering, LossSet, LossTerm, build_losses
from .camera_proxy import CameraProxyLoss
from .memory_loss import MemoryLoss

__all__ = ["LOSS_REGISTRY", "Clustering", "LossSet", "LossTerm", "build_losses", "CameraProxyLoss", "MemoryLoss"]
