"""HHCL (Hard-sample Guided Hybrid Contrast Learning) for unsupervised person re-ID, as a torchreid plugin.

Importing the package imports nothing else, so the command lines answer ``--help`` at once.
Each subpackage registers its parts into its registries when it is first imported
(``hhcl_plugin.engine``: the engine; ``memory``: the memories; ``data``: the sampler and the
datasets ``synthreid``, ``folder``, ``personx``, ``celebreid``; ``clustering``: the clusterers;
``losses``: the loss terms; ``gallery``: the gallery's index kinds; ``modeling``: the backbones),
and a registry is always reached through its subpackage, so a lookup finds every built-in part.  ``hhcl_plugin.engine`` and the like also work as attributes
of the package: the first access imports the subpackage.
"""
from typing import Any

__version__ = "0.2.0"

_SUBPACKAGES = ("clustering", "config", "data", "deploy", "engine", "gallery", "losses", "memory", "modeling", "testing",
                "tools", "utils")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
