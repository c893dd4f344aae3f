"""The plugin's model with an identity classifier, for supervised training on a labelled source dataset."""
from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .model import ReIDModel


class SupervisedReIDModel(nn.Module):
    """A :class:`ReIDModel` plus a linear identity classifier, with torchreid's output convention.

    In train mode it returns ``(logits, features)``, what torchreid's ``ImageSoftmaxEngine``
    (logits) and ``ImageTripletEngine`` (both) expect: the triplet loss on the pooled feature,
    the cross-entropy on the BatchNorm neck's output through the classifier (the "BNNeck"
    of Luo et al., 2019).  In eval mode it returns the unit-norm embedding of the wrapped model.

    The backbone and head are held under their ``ReIDModel`` names, so the state dict that
    torchreid's engine saves loads into a plain ``ReIDModel`` (``MODEL.WEIGHTS``); the
    ``classifier.*`` keys, tied to the source identities, are dropped there.
    """

    def __init__(self, model: ReIDModel, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.classifier = nn.Linear(model.feat_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, images: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        head = self.head
        pooled = head.embedding(head.pool(self.backbone(images)).flatten(1))
        neck = head.neck(pooled)
        if not self.training:
            return F.normalize(neck, dim=1)
        return self.classifier(neck), pooled
