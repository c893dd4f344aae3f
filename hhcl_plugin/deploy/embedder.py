"""Embed images with a trained model: the API behind ``hhcl-embed``."""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Union

import numpy as np
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from ..config import setup_cfg
from ..data.datasets.folder import IMAGE_EXTENSIONS, list_images as relative_image_paths
from ..data.transforms import build_transforms
from ..engine.checkpoint import load_model_weights
from ..engine.features import ImageLike, extract_features
from ..modeling import ReIDModel, build_model, resolve_device
from ..utils.errors import DatasetError

logger = logging.getLogger(__name__)


def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursively), sorted, so outputs are reproducible."""
    if not os.path.isdir(folder):
        raise DatasetError(f"input folder not found: {folder}")
    paths = [os.path.join(folder, rel) for rel in relative_image_paths(folder)]
    if not paths:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return paths


class Embedder:
    """A model in evaluation mode with its test transform: images in, unit-norm features out.

    >>> embedder = Embedder.from_config("configs/hhcl_synth.yml", ["MODEL.WEIGHTS", "output/hhcl_synth/best.pth"])
    >>> feats = embedder.embed(list_images("some/folder"))   # (N, D) float32, rows of norm 1
    """

    def __init__(self, cfg: CfgNode, model: Optional[ReIDModel] = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg)
        if model is None:
            model = build_model(cfg)
            if cfg.MODEL.WEIGHTS:
                load_model_weights(model, cfg.MODEL.WEIGHTS)
            else:
                logger.warning("MODEL.WEIGHTS is empty: embedding with the backbone's initial weights")
        self.model = model.to(self.device).eval()
        _, self.transform = build_transforms(cfg)

    @classmethod
    def from_config(cls, config_file: str, opts: Sequence[str] = ()) -> "Embedder":
        return cls(setup_cfg(config_file, opts))

    def embed(self, images: Union[DataLoader, Sequence[ImageLike]], batch_size: int = 0,
              num_workers: Optional[int] = None) -> np.ndarray:
        """Features of ``images`` (paths or PIL images, or a loader of ``{"img": ...}`` batches), in order,
        as a float32 (N, D) array: :func:`~hhcl_plugin.engine.features.extract_features`, as training's."""
        return extract_features(self.model, images, self.device, desc="embedding", transform=self.transform,
                                batch_size=batch_size or self.cfg.TEST.IMS_PER_BATCH,
                                num_workers=self.cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers
                                ).numpy()
