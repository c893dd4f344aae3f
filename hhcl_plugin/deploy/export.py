"""Export the embedding model (backbone + head, unit-norm output) to TorchScript and ONNX."""
from __future__ import annotations

import os
from typing import Tuple

import torch
from torch import nn


def _example(model: nn.Module, size: Tuple[int, int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(2, 3, *size, device=device)


def export_torchscript(model: nn.Module, path: str, size: Tuple[int, int]) -> str:
    """A traced TorchScript file: ``torch.jit.load(path)(images) -> features``."""
    model = model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, _example(model, size))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    traced.save(path)
    return path


def export_onnx(model: nn.Module, path: str, size: Tuple[int, int], opset: int = 17) -> str:
    """An ONNX file with input ``images`` (N, 3, H, W; N dynamic) and output ``features`` (N, D)."""
    model = model.eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, (_example(model, size),), path, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path
