"""Loss registry: ``LOSS.NAMES`` lists the registered terms whose sum is the training loss.

A term is a :class:`LossTerm` registered under a short name.  The engine builds the
selected terms once (:func:`build_losses`), the clustering hook hands each the new
clustering (:meth:`LossTerm.on_clustering`), and every training step sums what they
return.  A project adds a term by registering a class, without editing the engine::

    @LOSS_REGISTRY.register(name="my_term")
    class MyTerm(LossTerm): ...

and ``LOSS.NAMES ("memory", "my_term")`` in its config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from ..utils.errors import ConfigError
from ..utils.registry import Registry

LOSS_REGISTRY = Registry("LOSS")
LOSS_REGISTRY.__doc__ = """
Registered classes are :class:`LossTerm` subclasses; ``LOSS.NAMES`` selects them by their registered name.
"""


@dataclass
class Clustering:
    """What a term may rebuild itself from at each clustering (the same on every rank)."""

    features: torch.Tensor  # (N, D) L2-normalised features of every training image, dataset order
    labels: np.ndarray  # (N,) pseudo labels, -1 for outliers
    cameras: np.ndarray  # (N,) camera id of every training image
    memory: Any  # the epoch's cluster memory (hhcl_plugin.memory.ClusterMemory)


class LossTerm(nn.Module):
    """One term of the training loss.

    ``forward(features, targets, cameras)`` returns named loss tensors, already weighted.
    State that follows the batches (e.g. proxies) lives in buffers, so that it is saved
    with the checkpoint and broadcast under DDP like the memory banks; it must not change
    between the forward and the backward: :meth:`update` runs after the backward, with the
    features of every rank's batch.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> "LossTerm":
        raise NotImplementedError

    def check_data(self, cameras: Sequence[int]) -> None:
        """Refuse (``ConfigError``) training data the term cannot work with, before any work."""

    def on_clustering(self, clustering: Clustering) -> None:
        """Rebuild per-epoch state from a new clustering."""

    def update(self, features: torch.Tensor, targets: torch.Tensor, cameras: torch.Tensor) -> None:
        """Follow the batch (all ranks' samples), after the backward."""

    def load_epoch_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Take the buffers of a checkpoint, whose shapes depend on the clustering they came from."""
        for name, value in state.items():
            setattr(self, name, value.to(getattr(self, name).device))


class LossSet(nn.Module):
    """The selected terms, in ``LOSS.NAMES`` order; their outputs are merged into one dict."""

    def __init__(self, terms: Dict[str, LossTerm]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)

    @property
    def has_batch_state(self) -> bool:
        """Whether a term follows the batches (then :meth:`update` runs after each backward)."""
        return any(True for _ in self.buffers())

    def check_data(self, cameras: Sequence[int]) -> None:
        for term in self.terms.values():
            term.check_data(cameras)

    def on_clustering(self, clustering: Clustering) -> None:
        for term in self.terms.values():
            term.on_clustering(clustering)

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                cameras: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for term in self.terms.values():
            out.update(term(features, targets, cameras))
        return out

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor, cameras: Optional[torch.Tensor]) -> None:
        for term in self.terms.values():
            term.update(features, targets, cameras)

    def load_epoch_state(self, state: Dict[str, torch.Tensor]) -> None:
        for name, term in self.terms.items():
            prefix = f"terms.{name}."
            term.load_epoch_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def build_losses(cfg: CfgNode) -> LossSet:
    """The terms ``LOSS.NAMES`` selects; an unknown or repeated name is a one-line ``ConfigError``."""
    names: List[str] = list(cfg.LOSS.NAMES)
    if len(set(names)) != len(names):
        raise ConfigError(f"LOSS.NAMES lists a term twice: {names}; name each term once")
    terms = {}
    for name in names:
        try:
            cls = LOSS_REGISTRY.get(name)
        except KeyError as e:
            raise ConfigError(f"LOSS.NAMES: {e.args[0]}") from None
        try:
            terms[name] = cls.from_cfg(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return LossSet(terms)
