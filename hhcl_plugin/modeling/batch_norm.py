"""BatchNorm over equal sub-batches (``MODEL.BN_SPLIT``): one GPU normalising as several did.

The official HHCL figures come from ``nn.DataParallel`` on 4 GPUs: every GPU normalised
its quarter of the 256-image batch (4 identities x 16 images), while one GPU with plain
BatchNorm normalises all 16 identities together, which lowers accuracy considerably in
reports of the reference code.  :func:`convert_split_batchnorm` swaps every BatchNorm of
any model (plugin backbones, torchreid and timm models, the head's neck) for
:class:`SplitBatchNorm`, which in training normalises each of ``n`` consecutive equal
sub-batches with its own statistics.  The P x K sampler puts each identity's K images
next to each other, so a sub-batch of a multiple of K images holds whole identities, as
a DataParallel chunk did.

Running statistics: each sub-batch makes the usual momentum step from the same running
values and the results are averaged, i.e. the running mean moves towards the mean of the
sub-batch means (equal to the batch mean) and the running variance towards the mean of
the sub-batch variances.  DataParallel keeps only the first GPU's step (its replicas'
updates are dropped, as DDP's buffer broadcast keeps rank 0's); the average estimates
the same quantity with less noise.  In evaluation the running statistics are used, as
by plain BatchNorm, and the parameters and buffers keep BatchNorm's names and shapes, so
checkpoints load into models with or without the split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class SplitBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are taken over ``splits`` consecutive equal sub-batches."""

    def __init__(self, num_features: int, splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.splits = int(splits)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (batch, channels, ...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits == 1:
            return super().forward(x)
        self._check_input_dim(x)
        if x.shape[0] % self.splits:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {self.splits} equal parts "
                             f"(MODEL.BN_SPLIT); use a batch size divisible by it")
        factor = 0.0 if self.momentum is None else self.momentum
        track = self.track_running_stats and self.running_mean is not None
        if track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as in BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        outputs, means, variances = [], [], []
        for chunk in x.chunk(self.splits):
            mean = self.running_mean.clone() if track else None
            var = self.running_var.clone() if track else None
            outputs.append(F.batch_norm(chunk, mean, var, self.weight, self.bias, True, factor, self.eps))
            means.append(mean)
            variances.append(var)
        if track:
            with torch.no_grad():
                self.running_mean.copy_(torch.stack(means).mean(0))
                self.running_var.copy_(torch.stack(variances).mean(0))
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, splits={self.splits}"


def convert_split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """``module`` with every BatchNorm (1d, 2d, 3d) replaced by a :class:`SplitBatchNorm` holding its
    parameters and statistics; returns the module itself or, if it is a BatchNorm, its replacement."""
    if splits < 1:
        raise ValueError(f"MODEL.BN_SPLIT must be >= 1, got {splits}")
    if isinstance(module, _BatchNorm) and not isinstance(module, (SplitBatchNorm, nn.SyncBatchNorm)):
        tensors = [*module.parameters(), *module.buffers()]
        placement = {"device": tensors[0].device, "dtype": tensors[0].dtype} if tensors else {}
        split = SplitBatchNorm(module.num_features, splits, eps=module.eps, momentum=module.momentum,
                               affine=module.affine, track_running_stats=module.track_running_stats, **placement)
        split.load_state_dict(module.state_dict())
        for name, param in module.named_parameters(recurse=False):  # e.g. the neck's frozen bias
            getattr(split, name).requires_grad_(param.requires_grad)
        split.train(module.training)
        return split
    for name, child in module.named_children():
        module.add_module(name, convert_split_batchnorm(child, splits))
    return module
