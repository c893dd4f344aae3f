"""Data loaders: features for clustering, pseudo-labelled training batches, evaluation."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from yacs.config import CfgNode

from ..utils.errors import ConfigError, DatasetError
from ..utils.progress import progress
from .datasets import build_dataset
from .transforms import build_transforms

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
    for item in progress(items, desc=f"checking {split} images"):
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


def build_data(cfg: CfgNode) -> UnlabeledData:
    """The dataset of ``DATASETS.NAMES`` with the plugin's transforms: what ``hhcl-train`` hands the engine."""
    if len(cfg.DATASETS.NAMES) != 1:
        raise ConfigError(f"DATASETS.NAMES must name exactly one dataset, got {list(cfg.DATASETS.NAMES)}")
    name = cfg.DATASETS.NAMES[0]
    dataset = build_dataset(cfg, name)
    return _unlabeled_data(cfg, name, (dataset.train, dataset.query, dataset.gallery), *build_transforms(cfg))


def data_from_datamanager(datamanager: Any, cfg: CfgNode) -> UnlabeledData:
    """What the engine needs of a torchreid image datamanager (``torchreid.data.ImageDataManager``).

    Its train split (identity labels kept only for diagnostics), its test split and its
    transforms; its loaders are not used: the engine builds its own P x K loader every epoch.
    """
    if isinstance(datamanager, UnlabeledData):
        return datamanager
    if getattr(datamanager, "data_type", "image") != "image":
        raise ConfigError(f"the datamanager holds {datamanager.data_type} data; use torchreid's ImageDataManager")
    sources, targets = list(datamanager.sources), list(datamanager.targets)
    if len(sources) != 1 or targets != sources:
        raise ConfigError(f"the datamanager has sources {sources} and targets {targets}; HHCL trains and evaluates "
                          f"on one dataset: give ImageDataManager one name in sources and no other targets")
    name = sources[0]
    test = datamanager.test_dataset[name]
    splits = (datamanager.train_loader.dataset.train, test["query"], test["gallery"])
    return _unlabeled_data(cfg, name, splits, datamanager.transform_tr, datamanager.transform_te)


def _unlabeled_data(cfg: CfgNode, name: str, splits: Sequence[Sequence[tuple]], transform_train: Callable,
                    transform_test: Callable) -> UnlabeledData:
    strip = lambda split: sorted((p, pid, cam) for p, pid, cam, *_ in split)  # noqa: E731
    items = [strip(split) for split in splits]
    if cfg.DATALOADER.ON_BAD_IMAGE == "skip":
        items = [drop_unreadable(split, title) if split else split for split, title in zip(items, ("train", "query", "gallery"))]
    data = UnlabeledData(name, *items, transform_train, transform_test)
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
