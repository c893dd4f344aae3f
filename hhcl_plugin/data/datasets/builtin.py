"""Dataset entry points: torchreid's datasets plus ``synthreid``, ``folder``, ``personx``, ``celebreid``."""
from __future__ import annotations

import contextlib
import glob
import logging
from typing import Any, Collection, Iterator

from yacs.config import CfgNode

from ...utils import torchreid_compat as tr
from ...utils.errors import DatasetError
from .folder import FolderDataset  # noqa: F401  (registers "folder")
from .layouts import check_file_names, check_layout
from .named import NAMED_BENCHMARKS  # registers "personx", "celebreid"
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
    extra, foreign = {}, []
    if name == "synthreid":
        extra = dict(synth_preset=cfg.DATASETS.SYNTH_PRESET, synth_seed=cfg.DATASETS.SYNTH_SEED)
    elif name == "folder":  # checks its own layout
        extra = dict(camera=cfg.DATASETS.FOLDER.CAMERA)
    else:
        folder = check_layout(name, cfg.DATASETS.ROOT)
        if folder:
            foreign = check_file_names(name, folder, cfg.DATALOADER.ON_BAD_IMAGE)
        if name in NAMED_BENCHMARKS:  # our own parsers skip them; torchreid's must not see them
            extra, foreign = dict(skip=set(foreign)), []
    try:
        with _hidden_from_glob(foreign):
            dataset = tr.init_image_dataset(name, root=cfg.DATASETS.ROOT, mode="train", verbose=False, **extra)
    except ValueError as e:
        if "Invalid dataset name" in str(e):
            raise DatasetError(f"unknown dataset '{name}' in DATASETS.NAMES: {e}") from None
        raise
    except IndexError:  # torchreid indexes split[0] and fails on an empty split
        raise DatasetError(f"dataset '{name}' under {cfg.DATASETS.ROOT} has an empty split: "
                           f"train, query and gallery folders must each hold images") from None
    for split in ("train",) if name == "folder" else ("train", "query", "gallery"):
        if not getattr(dataset, split):
            raise DatasetError(f"dataset '{name}' has an empty {split} split under {cfg.DATASETS.ROOT}")
    return dataset


@contextlib.contextmanager
def _hidden_from_glob(paths: Collection[str]) -> Iterator[None]:
    """torchreid's Market-1501 and DukeMTMC-reID parsers list their folders with ``glob.glob``
    and cannot skip a file; while they run, the skipped files are left out of its answers."""
    if not paths:
        yield
        return
    hidden, original = set(paths), glob.glob
    glob.glob = lambda *args, **kwargs: [p for p in original(*args, **kwargs) if p not in hidden]
    try:
        yield
    finally:
        glob.glob = original
