"""Deployment: the embedding API and CLI, ONNX, torch.export and TorchScript exports against PyTorch."""
import glob
import logging
import os
import shlex

import numpy as np
import pytest
import torch

from conftest import tiny_opts
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.deploy import Embedder, export_onnx, export_program, export_torchscript, list_images
from hhcl_plugin.deploy import export as export_module
from hhcl_plugin.engine.checkpoint import save_checkpoint
from hhcl_plugin.tools import embed as embed_tool
from hhcl_plugin.tools import export as export_tool
from hhcl_plugin.tools.cli import parse_command_line
from hhcl_plugin.tools.embed import main as embed_main
from hhcl_plugin.tools.export import main as export_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"


@pytest.fixture(scope="module")
def weights(synth_root, tmp_path_factory):
    """A checkpoint whose weights differ from the ImageNet initialisation."""
    cfg = setup_cfg(CONFIG, tiny_opts(synth_root, str(tmp_path_factory.mktemp("w"))))
    model = Embedder(cfg).model
    with torch.no_grad():
        model.head.neck.weight.mul_(torch.linspace(0.5, 2.0, model.feat_dim))
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pth")
    save_checkpoint({"model": model.state_dict()}, path)
    return path


def opts(synth_root, tmp_path, weights):
    return tiny_opts(synth_root, str(tmp_path)) + ["MODEL.WEIGHTS", weights]


def test_embed_cli_writes_unit_norm_features_that_use_the_weights(synth_root, tmp_path, weights):
    folder = glob.glob(os.path.join(synth_root, "*", "query"))[0]
    out = str(tmp_path / "q.npz")
    # overrides before the tool's own flags, as the README writes it
    assert embed_main(["--config-file", CONFIG, *opts(synth_root, tmp_path, weights),
                       "--input", folder, "--output", out]) == 0
    saved = np.load(out)
    paths = list_images(folder)
    assert saved["features"].shape[0] == len(paths) and list(saved["paths"]) == paths
    np.testing.assert_allclose(np.linalg.norm(saved["features"], axis=1), 1.0, atol=1e-5)
    plain = Embedder(setup_cfg(CONFIG, tiny_opts(synth_root, str(tmp_path)))).embed(paths[:4])
    assert not np.allclose(plain, saved["features"][:4], atol=1e-3)  # the checkpoint was loaded
    again = Embedder(setup_cfg(CONFIG, opts(synth_root, tmp_path, weights))).embed(paths[:4], batch_size=3)
    np.testing.assert_allclose(again, saved["features"][:4], atol=1e-5)


def test_readme_command_lines_parse():
    """The README's hhcl-embed / hhcl-export lines give the tools' flags after the KEY VALUE overrides."""
    text = open(os.path.join(REPO, "README.md")).read().replace("\\\n", " ")
    for prog, module in (("hhcl-embed", embed_tool), ("hhcl-export", export_tool)):
        line = next(line for line in text.splitlines() if line.startswith(prog + " "))
        args = parse_command_line(module.build_parser(), shlex.split(line)[1:])
        assert args.opts == ["MODEL.WEIGHTS", "output/hhcl_synth/best.pth"], line
        assert args.output and args.config_file == "configs/hhcl_synth.yml"


def test_embed_cli_errors_are_one_line(tmp_path, capsys):
    assert embed_main(["--config-file", CONFIG, "--input", str(tmp_path / "nope"), "--output", "x.npz"]) == 2
    assert "input folder not found" in capsys.readouterr().err


SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}


def run_exported(fmt, path, images):
    """The exported file's output for ``images``, run the way a deployment would load it."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(["features"], {"images": images.numpy()})[0]
    module = torch.export.load(path).module() if fmt == "pt2" else torch.jit.load(path)
    with torch.no_grad():
        return module(images).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_exports_match_pytorch(synth_root, tmp_path, weights, fmt):
    out_dir = tmp_path / "export"
    path = str(out_dir / ("model" + SUFFIX[fmt]))
    assert export_main(["--config-file", CONFIG, "--format", fmt, "--output", path,
                        *opts(synth_root, tmp_path, weights)]) == 0
    assert os.listdir(out_dir) == ["model" + SUFFIX[fmt]]  # one self-contained file (no ONNX external data)
    cfg = setup_cfg(CONFIG, opts(synth_root, tmp_path, weights))
    model = Embedder(cfg).model
    for batch in (1, 5):  # batch sizes other than the traced one
        images = torch.randn(batch, 3, *cfg.INPUT.SIZE_TEST)
        with torch.no_grad():
            expected = model(images).numpy()
        np.testing.assert_allclose(run_exported(fmt, path, images), expected, atol=1e-4)


def plain_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()


def test_export_functions_accept_a_plain_model(tmp_path):
    model = plain_model()
    images = torch.randn(3, 3, 16, 8)
    with torch.no_grad():
        expected = model(images).numpy()
    for fmt, export in (("onnx", export_onnx), ("pt2", export_program), ("torchscript", export_torchscript)):
        path = export(model, str(tmp_path / ("m" + SUFFIX[fmt])), (16, 8))
        np.testing.assert_allclose(run_exported(fmt, path, images), expected, atol=1e-5)


def test_onnx_export_without_onnxscript_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(export_module, "onnx_exporter_available", lambda: False)
    model = plain_model()
    images = torch.randn(3, 3, 16, 8)
    with caplog.at_level(logging.WARNING, logger="hhcl_plugin.deploy.export"):
        path = export_onnx(model, str(tmp_path / "m.onnx"), (16, 8))
    assert "onnxscript is not installed" in caplog.text and "hhcl-plugin[export]" in caplog.text
    with torch.no_grad():
        np.testing.assert_allclose(run_exported("onnx", path, images), model(images).numpy(), atol=1e-5)
