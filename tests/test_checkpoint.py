import os

import pytest
import torch
from torch import nn

from hhcl_plugin.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from hhcl_plugin.utils.errors import WeightsError


def small():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pth"]


def test_reload_restores_weights_and_strips_module_prefix(tmp_path):
    src, dst = small(), small()
    path = str(tmp_path / "m.pth")
    save_checkpoint({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    load_model_weights(dst, path)
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)


def test_shape_mismatch_names_the_keys(tmp_path):
    path = str(tmp_path / "m.pth")
    save_checkpoint({"model": nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5)).state_dict()}, path)
    with pytest.raises(WeightsError, match=r"0.weight \(5, 4\) vs model \(3, 4\)"):
        load_model_weights(small(), path)


def test_not_a_checkpoint_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        load_model_weights(small(), str(junk))
    good = str(tmp_path / "good.pth")
    save_checkpoint({"model": small().state_dict()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(good, "rb").read()[:200])
    with pytest.raises(WeightsError, match="truncated"):
        load_checkpoint(str(truncated))
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(str(tmp_path / "absent.pth"))


def test_official_hhcl_checkpoint_layout_loads_into_the_plugin_model(tmp_path):
    """A file with exactly the official layout: DataParallel prefixes, base.N trunk, gap.p, feat_bn."""
    from hhcl_plugin.config import setup_cfg
    from hhcl_plugin.modeling import build_model

    cfg = setup_cfg("", ["MODEL.BACKBONE.NAME", "resnet50", "MODEL.BACKBONE.PRETRAINED", "False",
                         "MODEL.POOLING", "gem"])
    ours_to_theirs = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    theirs = {}
    g = torch.Generator().manual_seed(0)
    for key, value in build_model(cfg).state_dict().items():
        rand = torch.randn(value.shape, generator=g).to(value.dtype) if value.is_floating_point() else value + 3
        if key.startswith("backbone.body."):
            top, rest = key[len("backbone.body."):].split(".", 1)
            theirs[f"module.base.{ours_to_theirs[top]}.{rest}"] = rand
        elif key.startswith("head.neck."):
            theirs["module.feat_bn." + key[len("head.neck."):]] = rand
        elif key == "head.pool.p":
            theirs["module.gap.p"] = rand
    theirs["module.classifier.weight"] = torch.randn(700, 2048)  # their supervised variants have one
    path = str(tmp_path / "model_best.pth.tar")
    torch.save({"state_dict": theirs, "epoch": 50, "best_mAP": 0.842}, path)

    model = build_model(cfg)
    load_model_weights(model, path)
    own = model.state_dict()
    assert torch.equal(own["backbone.body.conv1.weight"], theirs["module.base.0.weight"])
    assert torch.equal(own["backbone.body.layer4.2.bn3.running_var"], theirs["module.base.7.2.bn3.running_var"])
    assert torch.equal(own["head.neck.weight"], theirs["module.feat_bn.weight"])
    assert torch.equal(own["head.pool.p"], theirs["module.gap.p"])
    assert sum(k.startswith("module.") for k in theirs) - 1 == len(own)  # every key used, bar the classifier
