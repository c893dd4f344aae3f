"""The one feature extractor: a model and images (or a loader of them) in, L2-normalised float32 features out.

Training's clustering, evaluation's query and gallery, ``hhcl-cluster``'s eps sweep,
``hhcl-embed`` and the :class:`~hhcl_plugin.deploy.Embedder` all embed through
:func:`extract_features`, so a sweep scores the very features that training clusters.
The model gives unit-norm rows itself (the plugin's head and ``TorchreidEmbedding`` normalise
in evaluation mode); the extractor does not normalise them a second time, which would
change their last bits.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.image_list import read_image
from ..utils.progress import progress

ImageLike = Union[str, Image.Image]


class ImageSequence(Dataset):
    """Paths or PIL images with a transform, as the batches of a loader (``{"img": tensor}``)."""

    def __init__(self, images: Sequence[ImageLike], transform: Callable) -> None:
        self.images, self.transform = list(images), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        img = self.images[i]
        return {"img": self.transform(read_image(img) if isinstance(img, str) else img.convert("RGB"))}


@torch.no_grad()
def extract_features(model: nn.Module, images: Union[DataLoader, Sequence[ImageLike]], device: torch.device,
                     desc: str = "features", transform: Optional[Callable] = None, batch_size: int = 64,
                     num_workers: int = 0) -> torch.Tensor:
    """Features of every image, in order, as a float32 (N, D) tensor on the CPU.

    ``images`` is a loader whose batches hold the images under ``"img"`` (the plugin's
    ``build_test_loader``), or a sequence of paths and PIL images, loaded with ``transform``
    (required then), ``batch_size`` and ``num_workers``.  The model is put in evaluation
    mode for the pass and back in its mode after it.
    """
    if not isinstance(images, DataLoader):
        if transform is None:
            raise ValueError("extract_features: images given as paths or PIL images need their transform=")
        images = DataLoader(ImageSequence(images, transform), batch_size=batch_size, num_workers=num_workers)
    was_training = model.training
    model.eval()
    try:
        chunks = [model(batch["img"].to(device, non_blocking=True)).float().cpu()
                  for batch in progress(images, desc=desc, unit="batch")]
    finally:
        model.train(was_training)
    if not chunks:
        return torch.zeros((0, int(getattr(model, "feat_dim", 0))), dtype=torch.float32)
    return torch.cat(chunks)
