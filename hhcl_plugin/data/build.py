"""Data for the engine: dataset splits and transforms, loaders for clustering, training and evaluation."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from yacs.config import CfgNode

from ..utils.errors import ConfigError, DatasetError
from ..utils.paths import check_dataset_root
from ..utils.progress import progress
from .datasets import build_dataset
from .datasets.synthreid import MARKER, synthreid_dir_name
from .image_list import ImageListDataset, Item, read_image
from .transforms import build_transforms

logger = logging.getLogger(__name__)

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


def check_data_paths(cfg: CfgNode) -> None:
    """``DATASETS.ROOT``, before any work: a folder, writable where ``synthreid`` is still to be generated."""
    synth = os.path.join(cfg.DATASETS.ROOT, synthreid_dir_name(cfg.DATASETS.SYNTH_PRESET, cfg.DATASETS.SYNTH_SEED))
    check_dataset_root(cfg.DATASETS.ROOT, tuple(cfg.DATASETS.NAMES), os.path.isfile(os.path.join(synth, MARKER)))


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
