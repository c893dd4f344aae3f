"""The folder layouts torchreid expects, checked before torchreid runs.

torchreid tries to *download* a dataset whose folder is missing (and asserts on odd
file names); offline that ends in a long traceback.  Checking the layout first turns
the commonest mistake, a wrong ``DATASETS.ROOT``, into one line that says what to fix.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence

from ...utils.errors import DatasetError

logger = logging.getLogger(__name__)

MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")

# dataset name -> alternative folders (relative to DATASETS.ROOT), each holding `splits`.
KNOWN_LAYOUTS: Dict[str, Dict[str, Sequence[str]]] = {
    "market1501": {"folders": ("market1501/Market-1501-v15.09.15", "market1501"), "splits": MARKET_SPLITS},
    "dukemtmcreid": {"folders": ("dukemtmc-reid/DukeMTMC-reID",), "splits": MARKET_SPLITS},
    "msmt17": {"folders": ("msmt17/MSMT17_V2", "msmt17/MSMT17_V1"),
               "splits": ("list_train.txt", "list_query.txt", "list_gallery.txt")},
    # as the official HHCL code reads them
    "personx": {"folders": ("PersonX",), "splits": MARKET_SPLITS},
    "celebreid": {"folders": ("CelebReID", "Celeb-reID"), "splits": ("train", "query", "gallery")},
}


class FileNames(NamedTuple):
    """How the ``*.jpg`` files of a benchmark are named: identity (group 1) and camera (group 2)."""

    pattern: str  # matched at the start of the file name
    example: str


# the datasets whose identity and camera are read from the file names
FILE_NAMES: Dict[str, FileNames] = {
    "market1501": FileNames(r"(-1|\d+)_c([1-6])", "0002_c1s1_000451_03.jpg"),
    "dukemtmcreid": FileNames(r"(\d+)_c([1-8])", "0001_c2_f0046182.jpg"),
    "personx": FileNames(r"(\d+)_c(\d+)", "0001_c3_0001.jpg"),
    "celebreid": FileNames(r"(-?\d+)_(\d+)", "1_1_0.jpg"),
}


def _listing(path: str, limit: int = 8) -> str:
    if not os.path.isdir(path):
        return f"{path} does not exist"
    entries = sorted(os.listdir(path))
    shown = ", ".join(entries[:limit]) + (", ..." if len(entries) > limit else "")
    return f"{path} contains [{shown or 'nothing'}]"


def check_layout(name: str, root: str) -> Optional[str]:
    """The folder that holds dataset ``name`` under ``root``; ``DatasetError`` if there is none."""
    layout = KNOWN_LAYOUTS.get(name)
    if layout is None:
        return None  # a dataset we have no layout for: torchreid's own checks apply
    root = os.path.abspath(os.path.expanduser(root))
    candidates: List[str] = [os.path.join(root, f) for f in layout["folders"]]
    for folder in candidates:
        if all(os.path.exists(os.path.join(folder, s)) for s in layout["splits"]):
            return folder
    expected = " or ".join(f"{c}/{{{','.join(layout['splits'])}}}" for c in candidates)
    found = next((c for c in candidates if os.path.isdir(c)), root)
    raise DatasetError(
        f"dataset '{name}' not found under DATASETS.ROOT={root}: expected {expected}; "
        f"{_listing(found)}. Set DATASETS.ROOT to the folder that contains '{layout['folders'][0].split('/')[0]}'"
    )


def foreign_files(name: str, folder: str) -> List[str]:
    """The ``*.jpg`` files in the splits of ``folder`` whose names do not follow ``FILE_NAMES[name]``."""
    pattern = re.compile(FILE_NAMES[name].pattern)
    return [path for split in KNOWN_LAYOUTS[name]["splits"]
            for path in sorted(glob.glob(os.path.join(folder, split, "*.jpg")))
            if not pattern.match(os.path.basename(path))]


def check_file_names(name: str, folder: str, on_bad_image: str) -> List[str]:
    """The foreign files to leave out (``on_bad_image`` "skip"); with "error", ``DatasetError`` on the first.

    A file named otherwise would stop the name parser halfway through loading, with a
    traceback that does not name the file.
    """
    if name not in FILE_NAMES:
        return []
    foreign = foreign_files(name, folder)
    if not foreign:
        return []
    names = FILE_NAMES[name]
    if on_bad_image != "skip":
        raise DatasetError(
            f"{foreign[0]} is not named like a {name} image: names must start with the identity and camera, "
            f"pattern '{names.pattern}' (e.g. {names.example}); {len(foreign)} such file(s). Rename or remove "
            f"them, use the 'folder' dataset for images with your own names, or set DATALOADER.ON_BAD_IMAGE skip")
    logger.warning("%s: skipping %d file(s) not named like '%s' (DATALOADER.ON_BAD_IMAGE skip), e.g. %s",
                   name, len(foreign), names.pattern, foreign[0])
    return foreign
