"""Dataset entry points: torchreid's datasets plus the built-in ``synthreid``."""
from __future__ import annotations

import logging
from typing import Any

from yacs.config import CfgNode

from ...utils import torchreid_compat as tr
from ...utils.errors import DatasetError
from .layouts import check_layout
from .synthreid import generate_synthreid

logger = logging.getLogger(__name__)


class SynthReID(tr.ImageDataset):
    """The procedural pedestrian set, generated on first use and read with Market-1501 parsing."""

    def __init__(self, root: str = "", synth_preset: str = "default", synth_seed: int = 0, **kwargs: Any) -> None:
        data_dir = generate_synthreid(root, preset=synth_preset, seed=synth_seed)
        parse = tr.Market1501.process_dir
        train = parse(self, f"{data_dir}/bounding_box_train", relabel=True)
        query = parse(self, f"{data_dir}/query", relabel=False)
        gallery = parse(self, f"{data_dir}/bounding_box_test", relabel=False)
        self.data_dir = data_dir
        super().__init__(train, query, gallery, **kwargs)


tr.register_image_dataset("synthreid", SynthReID)


def build_dataset(cfg: CfgNode, name: str) -> tr.ImageDataset:
    """Load dataset ``name`` from ``cfg.DATASETS.ROOT`` through torchreid's registry."""
    extra = {}
    if name == "synthreid":
        extra = dict(synth_preset=cfg.DATASETS.SYNTH_PRESET, synth_seed=cfg.DATASETS.SYNTH_SEED)
    else:
        check_layout(name, cfg.DATASETS.ROOT)
    try:
        dataset = tr.init_image_dataset(name, root=cfg.DATASETS.ROOT, mode="train", verbose=False, **extra)
    except ValueError as e:
        if "Invalid dataset name" in str(e):
            raise DatasetError(f"unknown dataset '{name}' in DATASETS.NAMES: {e}") from None
        raise
    except IndexError:  # torchreid indexes split[0] and fails on an empty split
        raise DatasetError(f"dataset '{name}' under {cfg.DATASETS.ROOT} has an empty split: "
                           f"train, query and gallery folders must each hold images") from None
    for split in ("train", "query", "gallery"):
        if not getattr(dataset, split):
            raise DatasetError(f"dataset '{name}' has an empty {split} split under {cfg.DATASETS.ROOT}")
    return dataset
