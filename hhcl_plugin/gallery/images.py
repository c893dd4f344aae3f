"""The images a gallery command reads: listed, named by camera, hashed, checked, embedded.

The lister and the camera rule are the ``folder`` dataset's (``DATASETS.FOLDER.CAMERA``),
so a folder of crops gives the same images and cameras to training and to the gallery.
Every image is checked readable before the first one is embedded: one bad file is
reported in seconds, not after the embedding of the others.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
from PIL import Image
from yacs.config import CfgNode

from ..data.datasets.folder import IMAGE_EXTENSIONS, camera_rule, list_images
from ..utils.errors import DatasetError


@dataclass
class ImageFile:
    path: str  # absolute
    rel: str  # relative to the folder given, '/' separated
    camera: str


def list_input(target: str, camera: str, flag: str = "--input") -> List[ImageFile]:
    """The images of a folder (recursively) or one image file, with their cameras; errors are one line."""
    rule = camera_rule(camera)
    if os.path.isfile(target):
        if not target.lower().endswith(IMAGE_EXTENSIONS):
            raise DatasetError(f"{flag} {target} is not an image ({', '.join(IMAGE_EXTENSIONS)}); give an image "
                               "or a folder of images")
        root, rels = os.path.dirname(os.path.abspath(target)), [os.path.basename(target)]
    elif os.path.isdir(target):
        root, rels = os.path.abspath(target), list_images(target)
        if not rels:
            raise DatasetError(f"{flag} {target} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                               "give a folder with images in it (searched recursively)")
    else:
        raise DatasetError(f"{flag} {target} does not exist; give an image or a folder of images")
    files = []
    for rel in rels:
        cam = rule(rel)
        if cam is None:
            raise DatasetError(f"image {os.path.join(root, rel)} does not match DATASETS.FOLDER.CAMERA '{camera}' "
                               f"(searched in '{rel}'); rename it, or give another DATASETS.FOLDER.CAMERA")
        files.append(ImageFile(os.path.join(root, rel), rel, cam))
    return files


def hash_and_check(path: str) -> str:
    """SHA-256 of the file's content; raises a one-line error when it is not a readable image."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read image {path} ({e}); remove or replace the file") from None
    return hashlib.sha256(data).hexdigest()


def check_readable(paths: Sequence[str]) -> None:
    for path in paths:
        hash_and_check(path)


def embed_images(cfg: CfgNode, paths: Sequence[str], batch_size: int = 0) -> np.ndarray:
    """Unit-norm features of ``paths`` with the model of ``cfg``: the gallery's one call into the embedder."""
    from ..deploy.embedder import Embedder

    if not paths:
        return np.zeros((0, 0), np.float32)
    return Embedder(cfg).embed(list(paths), batch_size=batch_size)

