"""Data: torchreid datasets (plus ``synthreid``), P x K samplers over pseudo labels, transforms, loaders."""
from .build import (UnlabeledData, build_data, build_test_loader, build_train_loader, check_data_paths,
                    data_from_datamanager)
from .image_list import ImageListDataset, read_image
from .samplers import SAMPLER_REGISTRY, CameraAwarePKSampler, build_train_sampler
from .transforms import build_transforms

__all__ = ["ImageListDataset", "UnlabeledData", "build_data", "build_test_loader", "build_train_loader", "check_data_paths",
           "data_from_datamanager", "read_image", "SAMPLER_REGISTRY", "CameraAwarePKSampler", "build_train_sampler",
           "build_transforms"]
