"""Data loaders: features for clustering, pseudo-labelled training batches, evaluation."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm
from yacs.config import CfgNode

from ..utils import torchreid_compat as tr
from ..utils.errors import ConfigError, DatasetError
from .datasets import build_dataset

logger = logging.getLogger(__name__)

Item = Tuple[str, int, int]  # image path, (pseudo) label, camera id


def read_image(path: str) -> Image.Image:
    """Open an image as RGB, naming the file when it cannot be read.

    torchreid's own reader retries forever on unreadable files; one bad file must not
    hang a run.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path} ({e}); remove or replace the file, "
                           f"or set DATALOADER.ON_BAD_IMAGE skip") from None


class ImageListDataset(Dataset):
    """Images with a label and camera, in torchreid's batch format (``img``, ``pid``, ``camid``)."""

    def __init__(self, items: Sequence[Item], transform: Optional[Callable] = None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, label, camid = self.items[index][:3]
        img = read_image(path)
        if self.transform is not None:
            img = self.transform(img)
        return {"img": img, "pid": label, "camid": camid, "impath": path, "index": index}


@dataclass
class UnlabeledData:
    """What the engine needs of a dataset; train identities are kept only for diagnostics."""

    name: str
    train: List[Item]
    query: List[Item]
    gallery: List[Item]
    transform_train: Callable
    transform_test: Callable

    @property
    def train_ground_truth(self) -> np.ndarray:
        return np.asarray([pid for _, pid, _ in self.train])

    @property
    def has_evaluation(self) -> bool:
        """False for a ``folder`` dataset without query/gallery: training runs without evaluation."""
        return bool(self.query)

    @property
    def sources(self) -> List[str]:  # torchreid's Engine reads these
        return [self.name]

    @property
    def targets(self) -> List[str]:
        return [self.name]


def drop_unreadable(items: List[Item], split: str) -> List[Item]:
    """``items`` without the images that cannot be decoded, each one logged."""
    kept = []
    for item in tqdm(items, desc=f"checking {split} images", disable=not sys.stderr.isatty(), leave=False):
        try:
            read_image(item[0])
            kept.append(item)
        except DatasetError as e:
            logger.warning("skipping %s", e)
    if len(kept) < len(items):
        logger.warning("%s: skipped %d unreadable image(s) of %d (DATALOADER.ON_BAD_IMAGE skip)",
                       split, len(items) - len(kept), len(items))
    if not kept:
        raise DatasetError(f"every image of the {split} split is unreadable")
    return kept


def build_transforms(cfg: CfgNode) -> Tuple[Callable, Callable]:
    """torchreid's train and test transforms; its listing of them goes to the debug log, not stdout."""
    norm = dict(norm_mean=list(cfg.INPUT.PIXEL_MEAN), norm_std=list(cfg.INPUT.PIXEL_STD))
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        transform_train, _ = tr.build_transforms(*cfg.INPUT.SIZE_TRAIN, transforms=list(cfg.INPUT.TRANSFORMS), **norm)
        _, transform_test = tr.build_transforms(*cfg.INPUT.SIZE_TEST, transforms=[], **norm)
    logger.debug("transforms:\n%s", listing.getvalue())
    return transform_train, transform_test


def build_data(cfg: CfgNode) -> UnlabeledData:
    if len(cfg.DATASETS.NAMES) != 1:
        raise ConfigError(f"DATASETS.NAMES must name exactly one dataset, got {list(cfg.DATASETS.NAMES)}")
    name = cfg.DATASETS.NAMES[0]
    dataset = build_dataset(cfg, name)
    transform_train, transform_test = build_transforms(cfg)
    strip = lambda split: sorted((p, pid, cam) for p, pid, cam, *_ in split)  # noqa: E731
    splits = [strip(dataset.train), strip(dataset.query), strip(dataset.gallery)]
    if cfg.DATALOADER.ON_BAD_IMAGE == "skip":
        splits = [drop_unreadable(items, split) if items else items
                  for items, split in zip(splits, ("train", "query", "gallery"))]
    data = UnlabeledData(name, *splits, transform_train, transform_test)
    logger.info("dataset %s: %d train images (labels unused), %d query, %d gallery",
                name, len(data.train), len(data.query), len(data.gallery))
    return data


def _loader(items: Sequence[Item], transform: Callable, batch_size: int, workers: int,
            sampler: Optional[Sampler] = None, drop_last: bool = False) -> DataLoader:
    return DataLoader(ImageListDataset(items, transform), batch_size=batch_size, sampler=sampler,
                      shuffle=False, num_workers=workers, pin_memory=torch.cuda.is_available(),
                      drop_last=drop_last, persistent_workers=False)


def build_test_loader(cfg: CfgNode, items: Sequence[Item], transform: Callable) -> DataLoader:
    return _loader(items, transform, cfg.TEST.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS)


def build_train_loader(cfg: CfgNode, items: Sequence[Item], transform: Callable, sampler: Sampler) -> DataLoader:
    return _loader(items, transform, cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS,
                   sampler=sampler, drop_last=True)
