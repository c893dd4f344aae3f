"""PersonX and Celeb-reID, the two other benchmarks the official HHCL code reads.

Both name their files like Market-1501: identity first, then the camera (``FILE_NAMES``
in ``layouts``).  Folders, as published and as HHCL reads them:

- ``personx``: ``ROOT/PersonX/{bounding_box_train,query,bounding_box_test}/*.jpg``,
  e.g. ``0001_c3_0001.jpg``; the cameras are numbered 3, 4, 8, 10, 11, 12.
- ``celebreid``: ``ROOT/CelebReID/{train,query,gallery}/*.jpg`` (or ``Celeb-reID/``),
  e.g. ``1_1_0.jpg``: identity, then the number HHCL reads as the camera.

Identity -1 marks junk images, which are left out as torchreid does for Market-1501.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Collection, List, Tuple

from ...utils import torchreid_compat as tr
from .layouts import FILE_NAMES, KNOWN_LAYOUTS, check_layout


def parse_named_split(name: str, folder: str, relabel: bool, skip: Collection[str] = ()) -> List[Tuple[str, int, int]]:
    """``(path, pid, camid)`` of the ``*.jpg`` files of one split; ``skip`` holds foreign files to leave out.

    ``relabel`` numbers the identities 0..n-1 (training); camera ids are as in the names.
    """
    pattern = re.compile(FILE_NAMES[name].pattern)
    items = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jpg"))):
        if path in skip:
            continue
        pid, cam = map(int, pattern.match(os.path.basename(path)).groups())
        if pid != -1:
            items.append((path, pid, cam))
    if relabel:
        labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
        items = [(path, labels[pid], cam) for path, pid, cam in items]
    return items


class NamedBenchmark(tr.ImageDataset):
    """A benchmark whose splits are folders of files named ``<identity>_<camera>...``."""

    name = ""

    def __init__(self, root: str = "", skip: Collection[str] = (), **kwargs: Any) -> None:
        folder = check_layout(self.name, root)
        train_split, query_split, gallery_split = (os.path.join(folder, s) for s in KNOWN_LAYOUTS[self.name]["splits"])
        super().__init__(parse_named_split(self.name, train_split, True, skip),
                         parse_named_split(self.name, query_split, False, skip),
                         parse_named_split(self.name, gallery_split, False, skip), **kwargs)


class PersonX(NamedBenchmark):
    name = "personx"


class CelebReID(NamedBenchmark):
    name = "celebreid"


NAMED_BENCHMARKS = {cls.name: cls for cls in (PersonX, CelebReID)}
for _name, _cls in NAMED_BENCHMARKS.items():
    tr.register_image_dataset(_name, _cls)
