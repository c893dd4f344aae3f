"""Re-ID head: pooling, optional projection, BatchNorm neck, L2 normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with a learnable exponent: between average (p=1) and max (p→∞) pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


def build_pooling(kind: str, gem_p: float = 3.0) -> nn.Module:
    if kind == "gem":
        return GeneralizedMeanPooling(gem_p)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(1)
    return nn.AdaptiveAvgPool2d(1)


class ReIDHead(nn.Module):
    """Maps a feature map to a unit-norm embedding.

    The BatchNorm neck has a frozen zero bias: the embedding is compared by cosine
    similarity against the memory banks, and a learnt shift would only move all
    embeddings together.
    """

    def __init__(self, in_channels: int, pooling: str = "gem", embedding_dim: int = 0, gem_p: float = 3.0) -> None:
        super().__init__()
        self.pool = build_pooling(pooling, gem_p)
        self.embedding = nn.Linear(in_channels, embedding_dim, bias=False) if embedding_dim > 0 else nn.Identity()
        self.out_dim = embedding_dim if embedding_dim > 0 else in_channels
        self.neck = nn.BatchNorm1d(self.out_dim)
        self.neck.bias.requires_grad_(False)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        if isinstance(self.embedding, nn.Linear):
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = self.pool(feature_map).flatten(1)
        x = self.neck(self.embedding(x))
        return F.normalize(x, dim=1)
