"""The folder layouts torchreid expects, checked before torchreid runs.

torchreid tries to *download* a dataset whose folder is missing (and asserts on odd
file names); offline that ends in a long traceback.  Checking the layout first turns
the commonest mistake, a wrong ``DATASETS.ROOT``, into one line that says what to fix.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

from ...utils.errors import DatasetError

MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")

# dataset name -> alternative folders (relative to DATASETS.ROOT), each holding `splits`.
KNOWN_LAYOUTS: Dict[str, Dict[str, Sequence[str]]] = {
    "market1501": {"folders": ("market1501/Market-1501-v15.09.15", "market1501"), "splits": MARKET_SPLITS},
    "dukemtmcreid": {"folders": ("dukemtmc-reid/DukeMTMC-reID",), "splits": MARKET_SPLITS},
    "msmt17": {"folders": ("msmt17/MSMT17_V2", "msmt17/MSMT17_V1"),
               "splits": ("list_train.txt", "list_query.txt", "list_gallery.txt")},
}


def _listing(path: str, limit: int = 8) -> str:
    if not os.path.isdir(path):
        return f"{path} does not exist"
    entries = sorted(os.listdir(path))
    shown = ", ".join(entries[:limit]) + (", ..." if len(entries) > limit else "")
    return f"{path} contains [{shown or 'nothing'}]"


def check_layout(name: str, root: str) -> None:
    """Raise ``DatasetError`` unless ``root`` holds dataset ``name`` as torchreid reads it."""
    layout = KNOWN_LAYOUTS.get(name)
    if layout is None:
        return  # a dataset we have no layout for: torchreid's own checks apply
    root = os.path.abspath(os.path.expanduser(root))
    candidates: List[str] = [os.path.join(root, f) for f in layout["folders"]]
    for folder in candidates:
        if all(os.path.exists(os.path.join(folder, s)) for s in layout["splits"]):
            return
    expected = " or ".join(f"{c}/{{{','.join(layout['splits'])}}}" for c in candidates)
    found = next((c for c in candidates if os.path.isdir(c)), root)
    raise DatasetError(
        f"dataset '{name}' not found under DATASETS.ROOT={root}: expected {expected}; "
        f"{_listing(found)}. Set DATASETS.ROOT to the folder that contains '{layout['folders'][0].split('/')[0]}'"
    )
