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
