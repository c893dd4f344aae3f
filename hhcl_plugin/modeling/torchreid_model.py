"""Models from ``torchreid.models.build_model`` as HHCL embedding models.

torchreid's evaluation takes what a model returns in eval mode: the feature vector that feeds
its identity classifier.  In train mode the same model returns the classifier's logits (or the
logits and that vector, with ``loss='triplet'``).  HHCL has no identities to classify: the
clustering and the memory need that vector in both modes, L2-normalised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.errors import ConfigError
from .model import ReIDModel


class TorchreidEmbedding(nn.Module):
    """A torchreid model giving its evaluation features, L2-normalised, in train mode too.

    In train mode a forward pre-hook on ``model.classifier`` keeps the classifier's input, the
    vector eval mode returns.  The classifier is frozen: nothing trains it without identity
    labels, and under DDP a trainable parameter without gradient stops the second step.  The
    model is held as ``module``, so the saved keys start with ``module.``, which torchreid's
    ``load_pretrained_weights`` strips, as it does for ``nn.DataParallel`` checkpoints.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Module):
            raise ConfigError(f"{type(model).__name__} has no 'classifier' module, so its features in train mode "
                              "are unknown; use a torchreid model whose eval-mode output feeds model.classifier "
                              "(resnet*, osnet*, mobilenetv2*, ...) or a plugin model "
                              "(hhcl_plugin.modeling.build_model)")
        self.module = model
        classifier.requires_grad_(False)
        self._kept: list = []
        classifier.register_forward_pre_hook(lambda _, inputs: self._kept.append(inputs[0]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.normalize(self.module(images), dim=1)
        self._kept.clear()
        self.module(images)
        if not self._kept:
            raise ConfigError(f"{type(self.module).__name__} did not call its classifier in train mode, so its "
                              "features are unknown; use a model whose train-mode forward goes through "
                              "model.classifier")
        return F.normalize(self._kept.pop(), dim=1)


def as_embedding_model(model: nn.Module) -> nn.Module:
    """``model`` itself when it gives L2-normalised features already, else its :class:`TorchreidEmbedding`."""
    return model if isinstance(model, (ReIDModel, TorchreidEmbedding)) else TorchreidEmbedding(model)
