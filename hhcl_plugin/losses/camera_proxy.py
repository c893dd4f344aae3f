"""Camera-aware proxies: one proxy per (cluster, camera) pair, contrasted within and across cameras.

The idea of the camera-aware proxy methods (CAP, Wang et al., AAAI 2021; ICE, Chen et al.,
ICCV 2021; O2CAP, TIP 2022; PPLR, Cho et al., CVPR 2022): a cluster gathers images of one
person from several cameras, and a single prototype per cluster mixes the camera's style
into the identity.  Splitting each cluster into one proxy per camera that saw it gives

* an **intra-camera** term: a sample against the proxies of its own camera only, its own
  (cluster, camera) proxy as the target: identities are told apart without the camera's
  style being a cue, since every candidate shares it;
* an **inter-camera** term: a sample against every proxy of its cluster (all cameras) as
  positives and the hardest proxies of other clusters as negatives, which pulls the
  views of one identity in different cameras together.

Written for this package from the papers' description; the layout follows the memory's.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from ..memory.batch_update import batch_cluster_means, batch_groups, momentum_update_
from ..utils.errors import ConfigError
from .build import LOSS_REGISTRY, Clustering, LossTerm

logger = logging.getLogger(__name__)


@LOSS_REGISTRY.register(name="camera_proxy")
class CameraProxyLoss(LossTerm):
    """``weight * (intra + inter_weight * inter)``, returned as ``loss_cam_intra`` and ``loss_cam_inter``.

    Buffers (rebuilt at each clustering, saved with the checkpoint): ``proxies`` (P, D), the
    unit-norm proxies; ``proxy_cluster`` and ``proxy_camera`` (P,), the pair of each proxy
    (camera as an index into ``camera_ids``); ``camera_ids`` (M,), the sorted camera ids of
    the training set; ``lookup`` (C, M), the proxy of each pair, -1 where the camera did not
    see the cluster.

    Update after each step: every proxy of the batch moves towards the mean of its batch
    features, ``p <- normalize(m * p + (1 - m) * mean)`` (the memory's convention for ``m``).
    """

    def __init__(self, weight: float = 1.0, *, temp: float = 0.07, inter_weight: float = 0.5,
                 hard_negatives: int = 50, momentum: float = 0.2) -> None:
        super().__init__(weight)
        if temp <= 0:
            raise ValueError(f"LOSS.CAMERA.TEMP must be > 0, got {temp}")
        if hard_negatives < 1:
            raise ValueError(f"LOSS.CAMERA.HARD_NEGATIVES must be >= 1, got {hard_negatives}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"LOSS.CAMERA.MOMENTUM must be in [0, 1], got {momentum}")
        self.temp, self.inter_weight = float(temp), float(inter_weight)
        self.hard_negatives, self.momentum = int(hard_negatives), float(momentum)
        self.fixed_shapes: Optional[bool] = None  # the batch grouping of the update (see memory.batch_update)
        for name, dtype in (("proxies", torch.float32), ("proxy_cluster", torch.long), ("proxy_camera", torch.long),
                            ("camera_ids", torch.long), ("lookup", torch.long)):
            self.register_buffer(name, torch.zeros(0, dtype=dtype))

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> "CameraProxyLoss":
        c = cfg.LOSS.CAMERA
        return cls(c.WEIGHT, temp=c.TEMP, inter_weight=c.INTER_WEIGHT, hard_negatives=c.HARD_NEGATIVES,
                   momentum=c.MOMENTUM)

    def check_data(self, cameras: Sequence[int]) -> None:
        found = np.unique(np.asarray(cameras))
        if len(found) < 2:
            raise ConfigError(f"LOSS.NAMES has 'camera_proxy' but the training images come from {len(found)} camera(s); "
                              "it needs at least two: drop 'camera_proxy' from LOSS.NAMES, or give the cameras "
                              "(DATASETS.FOLDER.CAMERA dir or a regex)")

    # ---------------------------------------------------------------- per clustering
    @torch.no_grad()
    def on_clustering(self, clustering: Clustering) -> None:
        """Proxies at the normalised means of each (cluster, camera) pair's members."""
        features = clustering.features.detach()
        device = features.device
        labels = torch.as_tensor(np.asarray(clustering.labels), dtype=torch.long, device=device)
        camera_ids = torch.as_tensor(np.unique(np.asarray(clustering.cameras)), dtype=torch.long, device=device)
        cams = torch.searchsorted(camera_ids, torch.as_tensor(np.asarray(clustering.cameras), dtype=torch.long,
                                                              device=device))
        valid = labels >= 0
        num_clusters, num_cams = int(labels.max()) + 1, camera_ids.numel()
        pair = labels[valid] * num_cams + cams[valid]
        keys, index, counts = torch.unique(pair, return_inverse=True, return_counts=True)  # sorted pairs
        dtype = torch.promote_types(features.dtype, torch.float32)
        sums = torch.zeros(keys.numel(), features.shape[1], dtype=dtype, device=device)
        sums.index_add_(0, index, features[valid].to(dtype))
        self.proxies = F.normalize(sums / counts.unsqueeze(1).to(dtype), dim=1)
        self.proxy_cluster, self.proxy_camera = keys // num_cams, keys % num_cams
        self.camera_ids = camera_ids
        lookup = torch.full((num_clusters * num_cams,), -1, dtype=torch.long, device=device)
        lookup[keys] = torch.arange(keys.numel(), device=device)
        self.lookup = lookup.view(num_clusters, num_cams)
        logger.info("camera proxies: %d for %d clusters in %d cameras (%.2f cameras per cluster)", keys.numel(),
                    num_clusters, num_cams, keys.numel() / num_clusters)

    def proxy_of(self, targets: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """The proxy index of each sample's (cluster, camera) pair (B,)."""
        return self.lookup[targets, torch.searchsorted(self.camera_ids, cameras.to(self.camera_ids.device))]

    # ---------------------------------------------------------------- step
    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                cameras: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if cameras is None:
            raise ValueError("the camera proxy loss needs each sample's camera id")
        with torch.autocast(device_type=features.device.type, enabled=False):
            own = self.proxy_of(targets, cameras)
            logits = features.to(self.proxies.dtype).mm(self.proxies.t()) / self.temp  # (B, P)
            intra = self.intra_camera(logits, own)
            inter = self.inter_camera(logits, targets)
        return {"loss_cam_intra": self.weight * intra, "loss_cam_inter": (self.weight * self.inter_weight) * inter}

    def intra_camera(self, logits: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the proxies of the sample's own camera, its own pair's proxy as the target."""
        same_camera = self.proxy_camera.unsqueeze(0) == self.proxy_camera[own].unsqueeze(1)
        return F.cross_entropy(logits.masked_fill(~same_camera, float("-inf")), own)

    def inter_camera(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the cluster's proxies (all cameras) of -log softmax among them and the hardest negatives."""
        positive = self.proxy_cluster.unsqueeze(0) == targets.unsqueeze(1)  # (B, P)
        k = min(self.hard_negatives, logits.shape[1])
        negatives = logits.detach().masked_fill(positive, float("-inf")).topk(k, dim=1).indices
        # a row with fewer than k negatives picks some positives too: they are in the softmax anyway
        kept = positive.clone().scatter_(1, negatives, True)
        log_norm = torch.logsumexp(logits.masked_fill(~kept, float("-inf")), dim=1)
        positive_mean = torch.where(positive, logits, torch.zeros_like(logits)).sum(1) / positive.sum(1)
        return (log_norm - positive_mean).mean()

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor, cameras: Optional[torch.Tensor]) -> None:
        if targets.numel() == 0 or self.proxies.numel() == 0:
            return
        own = self.proxy_of(targets, cameras)
        feats = features.detach().to(self.proxies.dtype)
        groups = batch_groups(own, self.fixed_shapes)
        momentum_update_(self.proxies, groups.clusters, batch_cluster_means(feats, groups), self.momentum)

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, temp={self.temp}, inter_weight={self.inter_weight}, "
                f"hard_negatives={self.hard_negatives}, momentum={self.momentum}, proxies={self.proxies.shape[0]}")
