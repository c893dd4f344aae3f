"""Datasets: torchreid's registry, extended with ``synthreid``, ``folder``, ``personx`` and ``celebreid``."""
from .builtin import SynthReID, build_dataset
from .folder import FolderDataset, read_folder
from .named import CelebReID, PersonX
from .layouts import KNOWN_LAYOUTS, check_layout

__all__ = ["SynthReID", "FolderDataset", "PersonX", "CelebReID", "build_dataset", "read_folder", "KNOWN_LAYOUTS",
           "check_layout"]
