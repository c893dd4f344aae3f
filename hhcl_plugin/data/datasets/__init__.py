"""Datasets: torchreid's registry, extended with the built-in ``synthreid``."""
from .builtin import SynthReID, build_dataset
from .layouts import KNOWN_LAYOUTS, check_layout

__all__ = ["SynthReID", "build_dataset", "KNOWN_LAYOUTS", "check_layout"]
