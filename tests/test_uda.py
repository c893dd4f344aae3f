"""Domain adaptation: torchreid's supervised engine trains the source model, HHCL starts from its checkpoint."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_opts
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.engine import build_engine
from hhcl_plugin.engine.checkpoint import load_checkpoint
from hhcl_plugin.tools.train import build_parser, setup
from hhcl_plugin.tools.train_source import source_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UDA = os.path.join(REPO, "projects", "uda")
SHORT = ["SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS", "2"]


@pytest.fixture(scope="module")
def two_stage(synth_root, tmp_path_factory):
    """``projects/uda/run.py`` on tiny: source stage (seed 0, labels), direct transfer, target stage (seed 1)."""
    out = tmp_path_factory.mktemp("uda")
    common = [o for o in tiny_opts(synth_root, "unused")][:-2] + SHORT  # all but OUTPUT_DIR
    proc = subprocess.run([sys.executable, os.path.join(UDA, "run.py"), "--direct-transfer", *common,
                           "--source-opts", f"OUTPUT_DIR {out}/source DATASETS.SYNTH_SEED 0",
                           "--target-opts", f"OUTPUT_DIR {out}/target DATASETS.SYNTH_SEED 1"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = setup_cfg(os.path.join(UDA, "configs", "source_synth.yml"), common + ["OUTPUT_DIR", f"{out}/source"])
    return out, source_checkpoint(cfg), common


def test_the_source_checkpoint_is_torchreids_and_starts_an_hhcl_run(two_stage, synth_root):
    out, weights, common = two_stage
    ckpt = load_checkpoint(weights)
    assert weights.endswith("model/model.pth.tar-1")  # torchreid's own name and layout
    assert {"state_dict", "epoch", "rank1", "optimizer"} <= set(ckpt) and "classifier.weight" in ckpt["state_dict"]
    args = build_parser().parse_args(["--config-file", os.path.join(UDA, "configs", "target_synth.yml"), *common,
                                      "OUTPUT_DIR", str(out / "loaded"), "MODEL.WEIGHTS", weights])
    with setup(args) as run:
        state = build_engine(run.cfg, run.device).model.state_dict()
    source = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("classifier.")}
    assert set(state) == set(source)
    for key, value in source.items():
        assert torch.equal(state[key], value), key


def test_the_two_stage_run_adapts_the_source_model_on_the_target(two_stage):
    out, _, _ = two_stage
    metrics = json.load(open(out / "target" / "metrics.json"))
    direct = json.load(open(out / "target" / "eval" / "1" / "results.json"))["evaluation"]
    assert metrics["initial"] == direct  # the target run starts from the source model
    assert metrics["final"] and metrics["epochs"][0]["clusters"] > 1


def test_source_stage_under_torchrun_is_refused_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hhcl_plugin.tools.train_source", "OUTPUT_DIR", str(tmp_path / "s")],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "WORLD_SIZE": "2"})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "runs in one process" in proc.stderr and not (tmp_path / "s").exists()
