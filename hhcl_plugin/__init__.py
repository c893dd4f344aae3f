"""HHCL (Hard-sample Guided Hybrid Contrast Learning) for unsupervised person re-ID, as a torchreid plugin.

Importing the package registers its parts (engine, memories, sampler, clusterer,
backbones, the ``synthreid`` dataset) into their registries.
"""
__version__ = "0.2.0"

from . import clustering, data, engine, memory, modeling  # noqa: F401,E402  (registration on import)
