"""Who appeared: the gallery's images clustered into people with the training's own clusterer.

``CLUSTER.NAME`` selects the clusterer from the registry (Jaccard + DBSCAN, or InfoMap)
and ``CLUSTER.EPS`` (a radius or ``auto``, the label-free rule) its radius, exactly as in
training; images no group takes are outliers (identity -1).
"""
from __future__ import annotations

import csv
import logging
import os
from datetime import datetime
from typing import List, Optional, Sequence, Tuple

import numpy as np
from yacs.config import CfgNode

from ..utils.errors import UserError
from .metadata import ImageRecord
from .store import Gallery

logger = logging.getLogger(__name__)


def parse_since(text: str) -> float:
    """``--since``: an ISO date or date and time (local time), or seconds since the epoch."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UserError(f"--since {text} is not a time; give a date such as 2026-05-01, a date and time such as "
                        "2026-05-01T18:00, or seconds since the epoch") from None


def group_images(gallery: Gallery, cfg: CfgNode, since: Optional[float] = None) -> Tuple[List[ImageRecord], np.ndarray]:
    """The images (all, or added at or after ``since``) and their identity labels (-1: in no group)."""
    from ..clustering import build_clusterer

    records = gallery.meta.records(since)
    if len(records) < 2:
        raise UserError(f"gallery {gallery.folder} has {len(records)} image(s)"
                        f"{' added since then' if since is not None else ''}; grouping needs at least 2")
    features = np.ascontiguousarray(gallery.vectors()[[r.row for r in records]], dtype=np.float32)
    result = build_clusterer(cfg)(features)
    return records, result.labels


def write_people_csv(path: str, records: Sequence[ImageRecord], labels: np.ndarray) -> str:
    """One row per image: identity, path, camera, when it was added (ISO time)."""
    from ..utils.paths import write_atomically

    def write(f) -> None:
        import io

        text = io.StringIO()
        out = csv.writer(text)
        out.writerow(["identity", "path", "camera", "added"])
        for rec, label in zip(records, labels):
            out.writerow([int(label), rec.path, rec.camera, datetime.fromtimestamp(rec.added).isoformat(timespec="seconds")])
        f.write(text.getvalue().encode())

    write_atomically(path, write, "the groups")
    return path


def write_group_folders(folder: str, records: Sequence[ImageRecord], labels: np.ndarray) -> int:
    """``folder/person_<id>/`` with a link to each of its images (outliers: ``folder/ungrouped/``)."""
    os.makedirs(folder, exist_ok=True)
    width = max(4, len(str(int(labels.max()) if len(labels) else 0)))
    for rec, label in zip(records, labels):
        sub = os.path.join(folder, f"person_{int(label):0{width}d}" if label >= 0 else "ungrouped")
        os.makedirs(sub, exist_ok=True)
        link = os.path.join(sub, f"{rec.row}_{os.path.basename(rec.path)}")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(rec.path, link)
    return int(labels.max()) + 1 if len(labels) else 0
