"""``folder``: your own crops, in folders, with any file names.

The main real use of unsupervised re-ID is a folder of detector crops from one's own
cameras, without identities and often without camera ids.  The layout is::

    DATASETS.ROOT/train/**/*.jpg              any depth, any names; no identity is read
    DATASETS.ROOT/query/<identity>/**/*.jpg   optional, for evaluation
    DATASETS.ROOT/gallery/<identity>/**/*.jpg optional, for evaluation

The camera of an image comes from ``DATASETS.FOLDER.CAMERA``: ``none`` (one camera for
all), ``dir`` (the image's parent folder) or a regular expression with one group,
searched in the image's path relative to its split (``/`` separated).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...utils import torchreid_compat as tr
from ...utils.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
EVAL_SPLITS = ("query", "gallery")

CameraRule = Callable[[str], Optional[str]]  # path relative to its split -> camera name, None: no match


def camera_rule(value: str) -> CameraRule:
    """The function that names the camera of an image, from ``DATASETS.FOLDER.CAMERA``."""
    if value == "none":
        return lambda rel: ""
    if value == "dir":
        return lambda rel: os.path.basename(os.path.dirname(rel))
    try:
        pattern = re.compile(value)
    except re.error as e:
        raise ConfigError(f"DATASETS.FOLDER.CAMERA '{value}' is not a regular expression ({e}); "
                          r"use none, dir or an expression with one group such as 'c(\d+)'") from None
    if pattern.groups != 1:
        raise ConfigError(f"DATASETS.FOLDER.CAMERA '{value}' has {pattern.groups} groups; it needs exactly one, "
                          r"the camera, e.g. 'c(\d+)' (or use none or dir)")

    def from_path(rel: str) -> Optional[str]:
        match = pattern.search(rel)
        return None if match is None else match.group(1)

    return from_path


def list_images(folder: str) -> List[str]:
    """Image paths under ``folder`` at any depth, relative to it, ``/`` separated, sorted."""
    return sorted(os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/")
                  for d, _, files in os.walk(folder, followlinks=True) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS))


def _natural_key(name: str) -> Tuple:
    """Sort ``c2`` before ``c10``: numbers by value, the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))


def _ids(names: Sequence[str]) -> Dict[str, int]:
    return {name: i for i, name in enumerate(sorted(set(names), key=_natural_key))}


def read_folder(root: str, camera: str) -> Tuple[List[Tuple[str, int, int]], ...]:
    """``(train, query, gallery)`` as torchreid's ``(path, pid, camid)`` lists; query and gallery may be empty.

    Train items all get identity 0 (none is known).  Camera names map to ids over all
    splits together, so that a camera keeps its id in query and gallery.
    """
    root = os.path.abspath(os.path.expanduser(root))
    rule = camera_rule(camera)
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise DatasetError(f"folder dataset: {train_dir} does not exist; DATASETS.ROOT must hold train/ "
                           "(and optionally query/<identity>/ and gallery/<identity>/)")
    present = [s for s in EVAL_SPLITS if os.path.isdir(os.path.join(root, s))]
    if len(present) == 1:
        missing = next(s for s in EVAL_SPLITS if s not in present)
        raise DatasetError(f"folder dataset: {root} has {present[0]}/ but no {missing}/; "
                           "evaluation needs both (or neither, to train without evaluation)")
    splits = {"train": list_images(train_dir), **{s: list_images(os.path.join(root, s)) for s in present}}
    for split, rels in splits.items():
        if not rels:
            raise DatasetError(f"folder dataset: {os.path.join(root, split)} holds no images "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
    for split in present:
        loose = next((rel for rel in splits[split] if "/" not in rel), None)
        if loose is not None:
            raise DatasetError(f"folder dataset: {os.path.join(root, split, loose)} is not in an identity folder; "
                               f"put each identity's images into {split}/<identity>/")
    cams = {split: [rule(rel) for rel in rels] for split, rels in splits.items()}
    for split, names in cams.items():
        if None in names:
            rel = splits[split][names.index(None)]
            raise DatasetError(f"image {os.path.join(root, split, rel)} does not match DATASETS.FOLDER.CAMERA "
                               f"'{camera}' (searched in '{rel}'); rename it, or set DATASETS.FOLDER.CAMERA none "
                               "(one camera for all) or dir (its folder)")
    cam_ids = _ids([c for names in cams.values() for c in names])
    pid_ids = _ids([rel.split("/", 1)[0] for split in present for rel in splits[split]])

    def items(split: str) -> List[Tuple[str, int, int]]:
        if split not in splits:
            return []
        base = os.path.join(root, split)
        return [(os.path.join(base, rel), pid_ids[rel.split("/", 1)[0]] if split != "train" else 0, cam_ids[cam])
                for rel, cam in zip(splits[split], cams[split])]

    return items("train"), items("query"), items("gallery")


class FolderDataset(tr.ImageDataset):
    """Images in ``train/`` (and optionally ``query/``, ``gallery/`` by identity), any names."""

    def __init__(self, root: str = "", camera: str = "none", **kwargs: Any) -> None:
        train, query, gallery = read_folder(root, camera)
        # torchreid's base class reads the first item of every split; without query and
        # gallery it gets a stand-in, replaced by the empty lists right after
        super().__init__(train, query or train[:1], gallery or train[:1], **kwargs)
        if not query:
            self.query, self.gallery = [], []
        logger.info("folder dataset %s: %d train images in %d camera(s), %d query, %d gallery (%s)",
                    root, len(train), len({c for _, _, c in train}), len(query), len(gallery),
                    "evaluation" if query else "no query/gallery: training without evaluation")


tr.register_image_dataset("folder", FolderDataset)
