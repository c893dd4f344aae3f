"""Lay the quickstart's ``synthreid`` images out as a ``folder`` dataset, as a user's own crops would be.

    python projects/quickstart/as_folder.py datasets/synthreid_default_s0 datasets/synth_folder
    python projects/quickstart/as_folder.py datasets/synthreid_default_s0 datasets/synth_folder_cams --train-cameras

Training images get random names in random subfolders and no identity (``--train-cameras``
starts each name with its camera, ``cam3_...``); query and gallery images go into one folder
per identity, named ``cam<camera>_<random>.jpg``, so that ``DATASETS.FOLDER.CAMERA 'cam(\\d+)_'``
reads the camera back.  Images are hard-linked where the file system allows, else copied.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from hhcl_plugin.data.datasets.synthreid import parse_market_name  # noqa: E402

SPLITS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}


def _place(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def lay_out(source: str, target: str, train_cameras: bool = False, seed: int = 0) -> dict:
    """Write the folder layout of ``source`` (a synthreid folder) to ``target``; image counts per split."""
    if os.path.exists(target):
        raise SystemExit(f"{target} exists; remove it or choose another target")
    rng = np.random.default_rng(seed)
    random_name = lambda: rng.bytes(6).hex()  # noqa: E731  (hex: never contains "cam")
    counts = {}
    for split, out_split in SPLITS.items():
        paths = sorted(glob.glob(os.path.join(source, split, "*.jpg")))
        for path in paths:
            pid, cam = parse_market_name(path)
            if out_split == "train":
                name = f"cam{cam}_{random_name()}.jpg" if train_cameras else f"{random_name()}.jpg"
                rel = os.path.join(random_name()[:2], random_name()[:2], name)
            else:
                rel = os.path.join(f"id{pid:04d}", f"cam{cam}_{random_name()}.jpg")
            _place(path, os.path.join(target, out_split, rel))
        counts[out_split] = len(paths)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a synthreid folder (holds bounding_box_train/, query/, bounding_box_test/)")
    parser.add_argument("target", help="the folder dataset to write (DATASETS.ROOT of the run)")
    parser.add_argument("--train-cameras", action="store_true", help="start training file names with cam<N>_")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(lay_out(args.source, args.target, args.train_cameras, args.seed))


if __name__ == "__main__":
    main()
