"""Shared fixtures: the tiny synthetic dataset and a fast CPU config."""
import os

import pytest
import torch

# two threads unless OMP_NUM_THREADS says otherwise (torch has read it already): the suite
# must pass with either, so a run with OMP_NUM_THREADS=1 really runs one thread
if not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """One generated ``synthreid`` tiny dataset shared by the whole test session."""
    from hhcl_plugin.data.datasets.synthreid import generate_synthreid

    root = tmp_path_factory.mktemp("datasets")
    generate_synthreid(str(root), preset="tiny", seed=0)
    return str(root)


def tiny_opts(root: str, output_dir: str):
    """Overrides for a seconds-long run on ``tiny`` with the offline-pretrained backbone."""
    return [
        "DATASETS.NAMES", "('synthreid',)", "DATASETS.ROOT", root, "DATASETS.SYNTH_PRESET", "tiny",
        "MODEL.BACKBONE.NAME", "efficientnet_lite0", "MODEL.DEVICE", "cpu",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCES", "4",
        "SOLVER.IMS_PER_BATCH", "16", "SOLVER.ITERS", "2", "SOLVER.MAX_EPOCH", "2",
        "CLUSTER.EPS", "0.6", "CLUSTER.K1", "10", "CLUSTER.K2", "3", "CLUSTER.MIN_SAMPLES", "2",
        "TEST.EVAL_PERIOD", "1", "TEST.IMS_PER_BATCH", "64", "OUTPUT_DIR", output_dir,
    ]
