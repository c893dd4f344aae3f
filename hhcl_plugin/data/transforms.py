"""Train and test transforms: torchreid's augmentations and the official HHCL ones, by name.

``INPUT.TRANSFORMS`` lists the train augmentations; they run in the fixed order below,
whatever the order of the list, between the resize and the normalisation (random erasing
after it, on the normalised tensor):

* ``random_flip``: horizontal flip, p 0.5;
* ``random_crop``: torchreid's (with p 0.5, enlarge 1.125x bilinearly, crop back);
* ``pad_crop``: the official one (pad ``INPUT.PADDING`` pixels with zeros, random crop back to size);
* ``random_patch``, ``color_jitter``: torchreid's;
* ``random_erase``: Zhong et al.'s random erasing (p 0.5, area 0.02-0.4, aspect 0.3-3.3),
  filled with ``INPUT.PIXEL_MEAN``, the ImageNet mean by default: the same operation as
  the official code's.

``INPUT.INTERPOLATION`` is the resize filter of both transforms: ``bilinear`` (torchreid's)
or ``bicubic`` (the official code's).  With torchreid's names and ``bilinear`` the
transforms are torchreid's own, operation for operation and random draw for random draw.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Tuple

from torchvision import transforms as T
from yacs.config import CfgNode

from ..utils import torchreid_compat as tr

logger = logging.getLogger(__name__)

# in the order they are applied
TRAIN_TRANSFORMS = ("random_flip", "random_crop", "pad_crop", "random_patch", "color_jitter", "random_erase")
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def _image_ops(name: str, height: int, width: int, padding: int) -> List[Callable]:
    """The PIL-image operations of one train augmentation (before the conversion to a tensor)."""
    if name == "random_flip":
        return [T.RandomHorizontalFlip()]
    if name == "random_crop":
        return [tr.reid_transforms.Random2DTranslation(height, width)]
    if name == "pad_crop":
        return [T.Pad(padding), T.RandomCrop((height, width))]
    if name == "random_patch":
        return [tr.reid_transforms.RandomPatch()]
    if name == "color_jitter":  # torchreid's strengths
        return [T.ColorJitter(brightness=0.2, contrast=0.15, saturation=0, hue=0)]
    return []


def build_transforms(cfg: CfgNode) -> Tuple[Callable, Callable]:
    """The train and test transforms of ``cfg.INPUT`` (names and interpolation checked by ``config.checks``)."""
    names = list(cfg.INPUT.TRANSFORMS)
    interpolation = INTERPOLATIONS[cfg.INPUT.INTERPOLATION]
    mean, std = list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)
    to_tensor = [T.ToTensor(), T.Normalize(mean=mean, std=std)]

    height, width = cfg.INPUT.SIZE_TRAIN
    train_ops: List[Callable] = [T.Resize((height, width), interpolation=interpolation)]
    for name in TRAIN_TRANSFORMS:
        if name in names:
            train_ops += _image_ops(name, height, width, cfg.INPUT.PADDING)
    train_ops += to_tensor
    if "random_erase" in names:
        train_ops.append(tr.reid_transforms.RandomErasing(mean=mean))
    transform_train = T.Compose(train_ops)
    transform_test = T.Compose([T.Resize(tuple(cfg.INPUT.SIZE_TEST), interpolation=interpolation), *to_tensor])
    logger.debug("train transform: %s\ntest transform: %s", transform_train, transform_test)
    return transform_train, transform_test
