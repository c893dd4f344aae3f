"""``synthreid``: a procedural pedestrian re-id dataset the project generates itself.

It exists so that the whole pipeline (clustering, memory, training, evaluation) can be
run and tested without downloading Market-1501. The files follow the Market-1501 layout
and naming (``bounding_box_train/``, ``query/``, ``bounding_box_test/``, files named
``{pid:04d}_c{cam}s1_{frame:06d}_01.jpg``), so torchreid's Market1501 parsing applies
unchanged and the ground-truth identity of every image is recoverable from its name.

Generation is deterministic in ``(preset, seed)``: every image has its own random stream
derived from ``(seed, pid, camera, frame)``, so the bytes do not depend on generation
order. The result is cached; a ``.complete`` marker written last (and an atomic rename
of a temporary folder) guarantees that an interrupted generation is never trusted.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from .synthreid_render import render_image, sample_camera, sample_identity

logger = logging.getLogger(__name__)

SYNTH_VERSION = 4  # bump whenever rendering changes, so stale caches are regenerated
MARKER = ".complete"
MAX_PID = 1501  # torchreid's Market1501 asserts 0 <= pid <= 1501
_NAME_RE = re.compile(r"([-\d]+)_c(\d)")


@dataclass(frozen=True)
class SynthPreset:
    """Size of a generated dataset; ranges are inclusive ``(low, high)``."""

    num_train_ids: int
    train_images_per_id: Tuple[int, int]
    num_test_ids: int
    gallery_images_per_id: Tuple[int, int]
    query_cams_per_id: int  # one query image per identity in each of that many cameras
    cams_per_id: Tuple[int, int]  # cameras an identity walks past (>= query cams + 1)
    num_cams: int = 6


SYNTH_PRESETS: Dict[str, SynthPreset] = {
    # for unit tests: a few hundred images, generated in about a second
    "tiny": SynthPreset(num_train_ids=24, train_images_per_id=(6, 10), num_test_ids=12,
                        gallery_images_per_id=(6, 8), query_cams_per_id=2, cams_per_id=(3, 4)),
    # for the CPU quickstart: ~2,000 train images / 150 ids, 100 test ids
    "default": SynthPreset(num_train_ids=150, train_images_per_id=(9, 18), num_test_ids=100,
                           gallery_images_per_id=(10, 15), query_cams_per_id=2, cams_per_id=(3, 6)),
}


class _Item(NamedTuple):
    split: str  # sub-folder: bounding_box_train | query | bounding_box_test
    pid: int
    cam: int  # 1-based
    frame: int


def _get_preset(preset: str) -> SynthPreset:
    if preset not in SYNTH_PRESETS:
        raise ValueError(f"Unknown synthreid preset {preset!r}; known presets: {sorted(SYNTH_PRESETS)}")
    return SYNTH_PRESETS[preset]


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"synthreid seed must be a non-negative integer, got {seed!r}")


def synthreid_dir_name(preset: str, seed: int) -> str:
    """Folder name of one generated dataset, so presets and seeds never share a cache."""
    _get_preset(preset)
    _check_seed(seed)
    return f"synthreid_{preset}_s{int(seed)}"


def parse_market_name(path: str) -> Tuple[int, int]:
    """``(pid, camid)`` of a Market-style file name, camid 1-based (as written in the name)."""
    match = _NAME_RE.search(os.path.basename(path))
    if match is None:
        raise ValueError(f"Not a Market-1501 style file name: {path!r}")
    pid, cam = map(int, match.groups())
    return pid, cam


def _assign_cams(rng: np.random.Generator, cams: np.ndarray, n: int) -> List[int]:
    """Every camera in ``cams`` gets at least one image (as far as ``n`` allows), rest random."""
    order = list(cams[:n]) + list(rng.choice(cams, size=max(0, n - len(cams))))
    return [int(c) for c in order]


def _plan(cfg: SynthPreset, seed: int) -> List[_Item]:
    """Which identity is seen by which camera: the dataset's file list, before rendering."""
    rng = np.random.default_rng([seed, 7])
    n_ids = cfg.num_train_ids + cfg.num_test_ids
    if n_ids > MAX_PID:
        raise ValueError(f"At most {MAX_PID} identities fit Market naming, preset asks for {n_ids}")
    pids = rng.choice(np.arange(1, MAX_PID + 1), size=n_ids, replace=False)
    train_pids, test_pids = sorted(pids[:cfg.num_train_ids]), sorted(pids[cfg.num_train_ids:])
    all_cams = np.arange(1, cfg.num_cams + 1)
    shots: List[Tuple[str, int, int]] = []
    for pid in train_pids:
        cams = rng.choice(all_cams, size=rng.integers(cfg.cams_per_id[0], cfg.cams_per_id[1] + 1), replace=False)
        n = int(rng.integers(cfg.train_images_per_id[0], cfg.train_images_per_id[1] + 1))
        shots += [("bounding_box_train", int(pid), c) for c in _assign_cams(rng, cams, n)]
    for pid in test_pids:
        cams = rng.choice(all_cams, size=rng.integers(cfg.cams_per_id[0], cfg.cams_per_id[1] + 1), replace=False)
        q = cfg.query_cams_per_id
        shots += [("query", int(pid), int(c)) for c in cams[:q]]
        # gallery cameras other than the query ones come first: every query has a cross-camera match
        n = int(rng.integers(cfg.gallery_images_per_id[0], cfg.gallery_images_per_id[1] + 1))
        shots += [("bounding_box_test", int(pid), c) for c in _assign_cams(rng, np.roll(cams, -q), n)]
    # each camera records its shots in a random order; frame numbers grow along its timeline
    clock = {int(c): 0 for c in all_cams}
    items = []
    for i in rng.permutation(len(shots)):
        split, pid, cam = shots[i]
        clock[cam] += int(rng.integers(1, 60))
        items.append(_Item(split, pid, cam, clock[cam]))
    return sorted(items)


def _marker_payload(preset: str, cfg: SynthPreset, seed: int) -> Dict:
    return {"dataset": "synthreid", "preset": preset, "seed": int(seed), "version": SYNTH_VERSION,
            "params": asdict(cfg)}


def _is_complete(folder: str, payload: Dict) -> bool:
    try:
        with open(os.path.join(folder, MARKER)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    found.pop("counts", None)
    return found == json.loads(json.dumps(payload))


def _render_all(folder: str, cfg: SynthPreset, seed: int) -> Dict[str, int]:
    cams = {c: sample_camera(np.random.default_rng([seed, 2, c])) for c in range(1, cfg.num_cams + 1)}
    idents = {}
    counts: Dict[str, int] = {}
    for item in _plan(cfg, seed):
        if item.pid not in idents:
            idents[item.pid] = sample_identity(np.random.default_rng([seed, 1, item.pid]))
        rng = np.random.default_rng([seed, 3, item.pid, item.cam, item.frame])
        img = render_image(idents[item.pid], cams[item.cam], rng)
        os.makedirs(os.path.join(folder, item.split), exist_ok=True)
        name = f"{item.pid:04d}_c{item.cam}s1_{item.frame:06d}_01.jpg"
        img.save(os.path.join(folder, item.split, name), quality=cams[item.cam].jpeg_quality)
        counts[item.split] = counts.get(item.split, 0) + 1
    return counts


def generate_synthreid(root: str, preset: str = "default", seed: int = 0) -> str:
    """Create (or reuse the cached) dataset and return the dataset folder path that
    contains bounding_box_train/, query/, bounding_box_test/."""
    cfg = _get_preset(preset)
    root = os.path.abspath(os.path.expanduser(root))
    target = os.path.join(root, synthreid_dir_name(preset, seed))
    payload = _marker_payload(preset, cfg, seed)
    if _is_complete(target, payload):
        logger.debug("Reusing cached synthreid dataset at %s", target)
        return target
    os.makedirs(root, exist_ok=True)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=root)
    try:
        counts = _render_all(tmp, cfg, seed)
        with open(os.path.join(tmp, MARKER), "w") as f:  # written last: marks the folder complete
            json.dump({**payload, "counts": counts}, f, indent=1, sort_keys=True)
        if os.path.exists(target):  # incomplete or stale: move it aside atomically, then drop it
            stale = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.stale-", dir=root)
            os.replace(target, os.path.join(stale, "old"))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target, payload):  # not a concurrent generator that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Generated synthreid %r (seed %d) at %s in %.1fs: %s", preset, seed, target,
                time.perf_counter() - start, counts)
    return target
