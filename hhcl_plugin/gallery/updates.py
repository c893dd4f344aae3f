"""What ``build``, ``add`` and ``prune`` change: only the files that are new, changed or gone.

A file already in the gallery with the same size and modification time is skipped
without being read; one whose size or time changed is hashed, and embedded again only
when its content changed.  A new path whose content is already in the gallery (a copy)
gets that image's vector without embedding.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import numpy as np
from yacs.config import CfgNode

from .images import ImageFile, embed_images, hash_and_check
from .metadata import ImageRecord
from .store import Change, Gallery

logger = logging.getLogger(__name__)

Embed = Callable[[CfgNode, Sequence[str]], np.ndarray]


@dataclass
class AddPlan:
    embed: List[ImageRecord] = field(default_factory=list)  # new or changed content: to embed
    copy: List[Tuple[ImageRecord, int]] = field(default_factory=list)  # content already in the gallery: its row
    replaced: List[str] = field(default_factory=list)  # paths whose old record goes (changed content)
    touched: List[Tuple[str, int, float]] = field(default_factory=list)
    unchanged: int = 0


def plan_add(gallery: Gallery, files: Sequence[ImageFile]) -> AddPlan:
    """Sort ``files`` into skipped, touched, copied and to-embed; every file read is checked to be an image."""
    plan = AddPlan()
    known = gallery.meta.by_path([f.path for f in files])
    seen_hashes = {}
    for f in files:
        st = os.stat(f.path)
        old = known.get(f.path)
        if old is not None and old.size == st.st_size and old.mtime == st.st_mtime:
            plan.unchanged += 1
            continue
        digest = hash_and_check(f.path)
        if old is not None and old.sha256 == digest:
            plan.touched.append((f.path, st.st_size, st.st_mtime))
            continue
        record = ImageRecord(-1, f.path, f.rel, f.camera, st.st_size, st.st_mtime, digest, 0.0, 0)
        if old is not None:
            plan.replaced.append(f.path)
        row = gallery.meta.row_with_hash(digest) if digest not in seen_hashes else None
        if row is not None:
            plan.copy.append((record, row))
        else:
            plan.embed.append(record)
        seen_hashes[digest] = True
    return plan


def apply_add(gallery: Gallery, cfg: CfgNode, plan: AddPlan, batch_size: int = 0, seed: int = 0,
              embed: Embed = embed_images) -> int:
    """Embed what the plan needs and commit it all in one change; returns the images added or replaced."""
    new = plan.embed + [rec for rec, _ in plan.copy]
    if not new and not plan.touched:
        return 0
    start = time.perf_counter()
    feats = embed(cfg, [r.path for r in plan.embed]) if plan.embed else np.zeros((0, gallery.dim), np.float32)
    if plan.embed:
        seconds = time.perf_counter() - start
        logger.info("embedded %d images in %.1fs (%.1f images/s)", len(feats), seconds, len(feats) / max(seconds, 1e-9))
    if len(plan.embed) and gallery.dim and feats.shape[1] != gallery.dim:
        raise ValueError(f"the model gives {feats.shape[1]}-d features, the gallery holds {gallery.dim}-d ones")
    copied = gallery.vectors()[[row for _, row in plan.copy]] if plan.copy else np.zeros((0, feats.shape[1]), np.float32)
    gallery.commit(Change(new=new, vectors=np.concatenate([feats, copied]).astype(np.float32, copy=False),
                          removed=plan.replaced, touched=plan.touched), seed=seed)
    return len(new)


def vanished(gallery: Gallery) -> List[str]:
    """Paths in the gallery whose file no longer exists."""
    return [path for _, path in gallery.meta.all_paths() if not os.path.exists(path)]


def prune(gallery: Gallery, seed: int = 0) -> List[str]:
    """Drop the images whose file is gone; returns their paths."""
    gone = vanished(gallery)
    if gone:
        gallery.commit(Change(removed=gone), seed=seed)
    return gone
