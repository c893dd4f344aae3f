"""Checks of the paths a user gives, before any work, so a typo costs seconds and not a run.

Without them a wrong path surfaced as ``FileExistsError`` or ``FileNotFoundError`` after the
data had been read, or after the features had been computed.
"""
from __future__ import annotations

import os

from .errors import UserError, WeightsError


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable_dir(path: str, name: str) -> None:
    """``path`` is a folder we can write in, or one we can create."""
    if not path:
        raise UserError(f"{name} is empty; give a folder to write to")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{name} {path} is a file, not a folder; give a folder, or remove the file")
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise UserError(f"{name} {path} cannot be created: {existing} is a file; give a folder elsewhere")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "cannot be written" if existing == os.path.abspath(path) else f"cannot be created in {existing}"
        raise UserError(f"{name} {path} {what} (no write permission); give a folder you can write to")


def check_writable_file(path: str, name: str) -> None:
    """``path`` is a file we can (over)write, in a folder that exists or can be created."""
    if os.path.isdir(path):
        raise UserError(f"{name} {path} is a folder; give the name of a file to write, in it or elsewhere")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{name} {path} exists and cannot be written (no write permission)")
    existing = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(existing):
        raise UserError(f"{name} {path} cannot be created: {existing} is a file; give a path in a folder")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"the folder of {name}")


def make_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def check_weights(spec: str) -> None:
    """A local ``MODEL.WEIGHTS`` exists and is a file; URLs and ``zoo:`` names are resolved when loaded."""
    if not spec or spec.startswith(("zoo:", "http://", "https://")):
        return
    if not os.path.exists(spec):
        raise WeightsError(f"MODEL.WEIGHTS {spec} does not exist; give a checkpoint file, a URL or zoo:NAME")
    if not os.path.isfile(spec):
        raise WeightsError(f"MODEL.WEIGHTS {spec} is a folder; give the checkpoint file in it, e.g. "
                           f"{os.path.join(spec, 'best.pth')}")
    if not os.access(spec, os.R_OK):
        raise WeightsError(f"MODEL.WEIGHTS {spec} cannot be read (no read permission)")


def check_dataset_root(root: str, names: "tuple[str, ...]", generated: bool) -> None:
    """``DATASETS.ROOT`` is a folder; one the built-in dataset will be generated in must be writable.

    Missing datasets under an existing root are named by the dataset layout check.
    """
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"DATASETS.ROOT {root} is a file, not a folder; set DATASETS.ROOT to the folder of the datasets")
    if not generated and "synthreid" in names:
        check_writable_dir(root, "DATASETS.ROOT (where synthreid is generated)")
