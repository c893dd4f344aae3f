"""Export the embedding model (backbone + head, unit-norm output) for deployment.

Three formats, all with a dynamic batch size: ONNX (onnxruntime, TensorRT), a
``torch.export`` program (``.pt2``: what AOTInductor and ExecuTorch take, and what torch
now recommends) and TorchScript (libtorch in C++; torch deprecates ``torch.jit`` but it
still serves existing C++ deployments).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Dict, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _example(model: nn.Module, size: Tuple[int, int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(2, 3, *size, device=device)


def _prepare(model: nn.Module, path: str) -> nn.Module:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return model.eval()


def _dynamic_batch() -> Tuple[Dict[int, Any]]:
    """``torch.export`` spec of the one input: dimension 0 (the batch) of any size."""
    return ({0: torch.export.Dim.DYNAMIC},)


def export_program(model: nn.Module, path: str, size: Tuple[int, int]) -> str:
    """A ``torch.export`` program: ``torch.export.load(path).module()(images) -> features``."""
    model = _prepare(model, path)
    with torch.no_grad():
        program = torch.export.export(model, (_example(model, size),), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, path)
    return path


def export_torchscript(model: nn.Module, path: str, size: Tuple[int, int]) -> str:
    """A traced TorchScript file: ``torch.jit.load(path)(images) -> features``."""
    model = _prepare(model, path)
    with torch.no_grad():
        traced = torch.jit.trace(model, _example(model, size))
    traced.save(path)
    return path


def onnx_exporter_available() -> bool:
    """Whether torch's ``torch.export``-based ONNX exporter can run (it needs ``onnxscript``)."""
    return importlib.util.find_spec("onnxscript") is not None


def export_onnx(model: nn.Module, path: str, size: Tuple[int, int], opset: int = 18) -> str:
    """An ONNX file with input ``images`` (N, 3, H, W; N dynamic) and output ``features`` (N, D).

    The weights are stored inside the one file.  Exported through ``torch.export`` when
    ``onnxscript`` is installed (the ``export`` extra); otherwise through the TorchScript-based
    exporter, which torch deprecates and may remove, with a warning saying how to avoid it.
    """
    model = _prepare(model, path)
    names = {"input_names": ["images"], "output_names": ["features"], "opset_version": opset}
    with torch.no_grad():
        if onnx_exporter_available():
            torch.onnx.export(model, (_example(model, size),), path, dynamo=True, external_data=False,
                              dynamic_shapes=_dynamic_batch(), **names)
        else:
            logger.warning("onnxscript is not installed: exporting with torch's deprecated TorchScript-based "
                           "ONNX exporter (pip install 'hhcl-plugin[export]' for the torch.export-based one)")
            torch.onnx.export(model, (_example(model, size),), path, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, **names)
    return path
