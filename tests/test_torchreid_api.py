"""HHCL from a torchreid-style script: torchreid's datamanager, models, optimisers, engine signature and weights."""
import functools
import json
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_opts
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.data import build_test_loader
from hhcl_plugin.data.datasets import SynthReID
from hhcl_plugin.engine import ImageHHCLEngine, extract_features
from hhcl_plugin.modeling import TorchreidEmbedding, build_model
from hhcl_plugin.tools.train import main
from hhcl_plugin.utils import torchreid_compat as tr
from hhcl_plugin.utils.env import seed_all
from hhcl_plugin.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"
TINY = "synthreid_tiny"
if TINY not in getattr(tr.data.datasets, "__image_datasets"):  # the tiny preset under its own torchreid name
    tr.register_image_dataset(TINY, functools.partial(SynthReID, synth_preset="tiny"))


def datamanager(root, cfg):
    """torchreid's own datamanager, with the sizes and augmentations of ``cfg``."""
    return tr.data.ImageDataManager(root=root, sources=TINY, height=cfg.INPUT.SIZE_TRAIN[0],
                                    width=cfg.INPUT.SIZE_TRAIN[1], transforms=list(cfg.INPUT.TRANSFORMS),
                                    batch_size_test=cfg.TEST.IMS_PER_BATCH, workers=0, use_gpu=False)


@pytest.fixture(scope="module")
def resnet18_run(synth_root, tmp_path_factory):
    """The README's script with torchreid's resnet18 (no pretrained weights), two epochs."""
    out = str(tmp_path_factory.mktemp("resnet18"))
    cfg = setup_cfg(CONFIG, tiny_opts(synth_root, out) + ["CLUSTER.EPS", "0.5"])
    dm = datamanager(synth_root, cfg)
    model = tr.build_torchreid_model("resnet18", num_classes=dm.num_train_pids, pretrained=False)
    optimizer = tr.build_optimizer(model, optim="adam", lr=1e-3)
    scheduler = tr.build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=5)
    engine = ImageHHCLEngine(dm, model, optimizer=optimizer, scheduler=scheduler, use_gpu=False, cfg=cfg)
    metrics = engine.run(save_dir=out, max_epoch=2, eval_freq=1, print_freq=1)
    return engine, metrics, out


def test_a_torchreid_model_trains_through_run(resnet18_run):
    engine, metrics, out = resnet18_run
    assert isinstance(engine.model, TorchreidEmbedding)
    assert [e["epoch"] for e in metrics["evaluations"]] == [1, 2]
    assert metrics["evaluations"][0]["clusters"] > 1
    assert 0.0 < metrics["final"]["mAP"] <= 100.0
    assert json.load(open(os.path.join(out, "metrics.json"))) == metrics
    assert engine.memory.bank.shape[-1] == 512  # resnet18's evaluation features


def test_test_only_evaluates_without_training(resnet18_run):
    engine, metrics, _ = resnet18_run
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    figures = engine.run(test_only=True)
    assert figures == metrics["final"]  # the same weights as the last evaluation
    assert len(engine.metrics["evaluations"]) == 2
    assert all(torch.equal(v, before[k]) for k, v in engine.model.state_dict().items())


def test_torchreid_loads_the_saved_weights_and_gives_the_plugins_features(resnet18_run):
    engine, _, out = resnet18_run
    path = os.path.join(out, "last.pth")
    fresh = tr.build_torchreid_model("resnet18", num_classes=1, pretrained=False)
    tr.utils.load_pretrained_weights(fresh, path)
    trained = engine.model.module.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in fresh.state_dict().items() if not k.startswith("classifier"))

    extractor = tr.utils.FeatureExtractor(model_name="resnet18", model_path=path, image_size=(64, 32),
                                          device="cpu", verbose=False)
    items = engine.data.query[:8]
    theirs = F.normalize(extractor([p for p, _, _ in items]), dim=1)
    ours = extract_features(engine.model, build_test_loader(engine.cfg, items, engine.data.transform_test),
                            torch.device("cpu"))
    assert (theirs - ours).abs().max() <= 1e-5


def test_options_that_need_identity_labels_are_refused(resnet18_run):
    engine, _, _ = resnet18_run
    with pytest.raises(ConfigError, match="fixbase_epoch and open_layers train the new identity classifier"):
        engine.run(fixbase_epoch=2, open_layers=["classifier"])
    with pytest.raises(ConfigError, match="normalize_feature=False"):
        engine.run(normalize_feature=False)
    with pytest.raises(ConfigError, match="TEST.DIST_METRIC is 'hamming'"):
        engine.run(dist_metric="hamming")
    with pytest.raises(ConfigError, match="Sequential has no 'classifier' module"):
        TorchreidEmbedding(torch.nn.Sequential(torch.nn.Flatten()))


def test_the_launcher_and_the_script_give_the_same_figures(synth_root, tmp_path):
    opts = tiny_opts(synth_root, str(tmp_path / "launcher")) + ["SOLVER.MAX_EPOCH", "1"]
    assert main(["--config-file", CONFIG, *opts]) == 0

    cfg = setup_cfg(CONFIG, opts)
    dm = datamanager(synth_root, cfg)
    seed_all(cfg.SEED)  # what the launcher's default_setup does before it builds the model
    engine = ImageHHCLEngine(dm, build_model(cfg), use_gpu=False, cfg=cfg)
    engine.run(save_dir=str(tmp_path / "script"))
    launcher, script = (json.load(open(tmp_path / d / "metrics.json")) for d in ("launcher", "script"))
    assert launcher == script and launcher["final"]["mAP"] > 0
