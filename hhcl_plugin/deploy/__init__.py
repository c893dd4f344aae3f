"""Using a trained model: embedding images, exporting to ONNX, torch.export and TorchScript."""
from .embedder import Embedder, list_images
from .export import export_onnx, export_program, export_torchscript

__all__ = ["Embedder", "list_images", "export_onnx", "export_program", "export_torchscript"]
