"""Parity with the official HHCL code (bupt-ai-cz/HHCL-ReID), each part against a plain reference here.

CM's per-sample bank update, GeM checkpoints of the official model classes, BatchNorm over
sub-batches as the official 4-GPU run computed it, the official transforms, and the CPU
quickstart's config kept as it was.
"""
import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from hhcl_plugin.config import get_cfg, setup_cfg
from hhcl_plugin.data import build_transforms
from hhcl_plugin.engine.checkpoint import load_model_weights
from hhcl_plugin.memory import CM, build_memory
from hhcl_plugin.modeling import SplitBatchNorm, build_model, convert_split_batchnorm
from hhcl_plugin.utils import torchreid_compat as tr
from hhcl_plugin.utils.errors import ConfigError
from test_distributed import free_port, join_group

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- 1. CM's update

def official_cm_update(bank, features, targets, momentum):
    """The official CM backward's loop: one step per sample, in batch order, renormalised each time."""
    bank = bank.clone()
    for x, y in zip(features, targets.tolist()):
        bank[y] = momentum * bank[y] + (1.0 - momentum) * x
        bank[y] /= bank[y].norm()
    return bank


def cm_memory(update="per_sample", clusters=6, dim=8):
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(clusters * 3, dim, generator=g, dtype=torch.float64), dim=1)
    cfg = get_cfg()
    cfg.MEMORY.MODE, cfg.MEMORY.CM_UPDATE, cfg.MEMORY.MOMENTUM = "CM", update, 0.2
    return build_memory(cfg, feats, torch.arange(clusters).repeat_interleave(3))


def unequal_batch(seed):
    """Cluster 1 five times, cluster 4 three times, clusters 0 and 2 once, 3 and 5 absent; shuffled."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.tensor([1] * 5 + [4] * 3 + [0, 2])[torch.randperm(10, generator=g)]
    return F.normalize(torch.randn(10, 8, generator=g, dtype=torch.float64), dim=1), targets


@pytest.mark.parametrize("fixed_shapes", [False, True], ids=["per-cluster groups (CPU)", "fixed shapes (GPU)"])
def test_cm_update_is_the_official_per_sample_loop(fixed_shapes):
    """Tolerance 1e-12 in float64: the same arithmetic, steps grouped by rank instead of by sample."""
    memory = cm_memory()
    memory.fixed_shapes = fixed_shapes
    expected = memory.bank.clone()
    for seed in range(4):
        x, targets = unequal_batch(seed)
        expected = official_cm_update(expected, x, targets, memory.momentum)
        sum(memory(x.clone().requires_grad_(), targets).values()).backward()  # the update runs in backward
        torch.testing.assert_close(memory.bank, expected, atol=1e-12, rtol=0)
    # the official loop moves a cluster once per sample: a single mean step lands elsewhere
    x, targets = unequal_batch(9)
    mean_step = F.normalize(0.2 * expected[1] + 0.8 * x[targets == 1].mean(0), dim=0)
    assert (official_cm_update(expected, x, targets, 0.2)[1] - mean_step).abs().max() > 1e-3


def test_cm_mean_update_option_moves_each_cluster_once_towards_its_batch_mean():
    memory = cm_memory("mean")
    before = memory.bank.clone()
    x, targets = unequal_batch(0)
    memory.update(x, targets)
    for c in range(6):
        members = x[targets == c]
        want = F.normalize(0.2 * before[c] + 0.8 * members.mean(0), dim=0) if len(members) else before[c]
        torch.testing.assert_close(memory.bank[c], want, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="MEMORY.CM_UPDATE must be one of per_sample, mean"):
        CM(3, 4, update="median")


# ---------------------------------------------------------------------------- 2. GeM checkpoints

class OfficialGeM(nn.Module):
    """The official GeneralizedMeanPoolingP: the exponent is a one-element parameter, shape (1,)."""

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


class OfficialReID(nn.Module):
    """The official ResNet / ResNetIBN module layout (base, gap, feat_bn) and its test-time forward."""

    def __init__(self, trunk):
        super().__init__()
        trunk.layer4[0].conv2.stride = (1, 1)
        trunk.layer4[0].downsample[0].stride = (1, 1)
        self.base = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool,
                                  trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)
        self.gap = OfficialGeM()
        self.feat_bn = nn.BatchNorm1d(2048)

    def forward(self, x):
        return F.normalize(self.feat_bn(self.gap(self.base(x)).view(x.shape[0], -1)))


def randomise_(model, seed):
    """Random BatchNorm statistics and affine parameters and a GeM exponent off its default."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
            elif isinstance(m, nn.InstanceNorm2d) and m.affine:
                m.weight.uniform_(0.5, 1.5, generator=g)
        model.gap.p.fill_(3.7)


@pytest.mark.parametrize("arch", ["resnet50", "resnet50_ibn_a"])
@pytest.mark.parametrize("p_shape", [(1,), ()], ids=["p of shape (1,)", "scalar p"])
def test_official_gem_checkpoint_gives_the_official_features(arch, p_shape, tmp_path):
    """The official classes' layout (torchvision's ResNet-50 / IBN-ResNet-50-a trunk), random weights.

    Features within 1e-5 of the hand-built official model in float32.
    """
    torch.manual_seed(0)
    trunk = torchvision.models.resnet50() if arch == "resnet50" else tr.build_torchreid_model(
        arch, num_classes=1, loss="softmax", pretrained=False)
    official = OfficialReID(trunk)
    randomise_(official, seed=1)
    state = {f"module.{k}": v for k, v in official.state_dict().items()}  # saved from nn.DataParallel
    assert state["module.gap.p"].shape == (1,)
    state["module.gap.p"] = state["module.gap.p"].reshape(p_shape)
    path = str(tmp_path / "model_best.pth.tar")
    torch.save({"state_dict": state, "epoch": 49, "best_mAP": 0.5}, path)

    cfg = setup_cfg("", ["MODEL.BACKBONE.NAME", arch, "MODEL.BACKBONE.PRETRAINED", "False", "MODEL.POOLING", "gem"])
    model = build_model(cfg)
    load_model_weights(model, path)
    assert model.head.pool.p.shape == () and float(model.head.pool.p.detach()) == pytest.approx(3.7)
    images = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), official.eval()(images), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- 3. BatchNorm over sub-batches

def small_net():
    """Conv + BatchNorm2d trunk and a BatchNorm1d neck, the two kinds a re-ID model has."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(6))


def parity_inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 3, 10, 6, generator=g), torch.randn(8, 6, generator=g)  # images, loss weights


def ddp_plain_bn_worker(rank, world, port, out_dir):
    join_group(rank, world, port)
    try:
        model = nn.parallel.DistributedDataParallel(small_net())
        images, weights = parity_inputs()
        half = slice(rank * 4, rank * 4 + 4)
        x = images[half].clone().requires_grad_()
        out = model(x)
        (out * weights[half]).sum().backward()
        torch.save({"out": out.detach(), "grad": x.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_bn_split_2_in_one_process_equals_two_ddp_processes_with_plain_batchnorm(tmp_path):
    """Outputs and input gradients within 1e-5 (float32)."""
    mp.spawn(ddp_plain_bn_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    model = convert_split_batchnorm(small_net(), 2)
    images, weights = parity_inputs()
    x = images.clone().requires_grad_()
    out = model(x)
    (out * weights).sum().backward()
    torch.testing.assert_close(out.detach(), torch.cat([r["out"] for r in ranks]), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.grad, torch.cat([r["grad"] for r in ranks]), atol=1e-5, rtol=0)
    plain = small_net()
    assert (plain(images) - out).abs().max() > 1e-2  # whole-batch statistics differ: the split did something


def test_split_batchnorm_running_statistics_average_the_sub_batch_updates_and_eval_uses_them():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5, momentum=0.3)
    split = convert_split_batchnorm(bn, 3)
    x = torch.randn(6, 5, 4, 4) * 2 + 1
    split(x)
    halves = [nn.BatchNorm2d(5, momentum=0.3) for _ in range(3)]
    for ref, chunk in zip(halves, x.chunk(3)):
        ref(chunk)
    torch.testing.assert_close(split.running_mean, torch.stack([h.running_mean for h in halves]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([h.running_var for h in halves]).mean(0))
    assert int(split.num_batches_tracked) == 1
    plain = nn.BatchNorm2d(5)
    plain.load_state_dict(split.state_dict())  # same names and shapes as BatchNorm
    torch.testing.assert_close(split.eval()(x), plain.eval()(x))
    with pytest.raises(ValueError, match="does not split into 3 equal parts"):
        split.train()(x[:4])


@pytest.mark.parametrize("arch", ["resnet18", "resnet50_ibn_a", "efficientnet_lite0"])
def test_bn_split_converts_every_batchnorm_of_plugin_and_torchreid_models(arch):
    opts = ["MODEL.BACKBONE.NAME", arch, "MODEL.BACKBONE.PRETRAINED", "False"]
    plain = build_model(setup_cfg("", opts))
    split = build_model(setup_cfg("", opts + ["MODEL.BN_SPLIT", "4"]))
    norms = [m for m in split.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, SplitBatchNorm) and m.splits == 4 for m in norms)
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules()) == len(norms)
    assert {k: v.shape for k, v in split.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert not split.head.neck.bias.requires_grad  # the neck's frozen bias stays frozen


# ---------------------------------------------------------------------------- 4. transforms

def person_image(seed=0, size=(40, 90)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def input_cfg(*opts):
    return setup_cfg("", ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", *opts])


def seeded(transform, img, seed):
    random.seed(seed)
    torch.manual_seed(seed)
    return transform(img)


def test_torchreid_names_with_bilinear_give_torchreid_s_own_transforms():
    """Bit for bit, draw for draw: the quickstart's transforms did not change."""
    names = ["random_flip", "random_crop", "random_erase", "color_jitter", "random_patch"]
    train, test = build_transforms(input_cfg("INPUT.TRANSFORMS", str(names)))
    theirs_train, theirs_test = tr.build_transforms(64, 32, transforms=names)
    for seed in range(6):
        img = person_image(seed)
        assert torch.equal(seeded(train, img, seed), seeded(theirs_train, img, seed))
        assert torch.equal(test(img), theirs_test(img))


def test_official_train_and_test_transforms():
    """As the official examples/train.py composes them, and bicubic against PIL's own resize."""
    train, test = build_transforms(input_cfg("INPUT.TRANSFORMS", "['random_erase', 'pad_crop', 'random_flip']",
                                             "INPUT.INTERPOLATION", "bicubic"))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    official_train = T.Compose([T.Resize((64, 32), interpolation=3), T.RandomHorizontalFlip(p=0.5), T.Pad(10),
                                T.RandomCrop((64, 32)), T.ToTensor(), T.Normalize(mean=mean, std=std),
                                tr.reid_transforms.RandomErasing(probability=0.5, mean=mean)])
    for seed in range(6):
        img = person_image(seed)
        assert torch.equal(seeded(train, img, seed), seeded(official_train, img, seed))
    img = person_image(0)
    bicubic = np.asarray(img.resize((32, 64), Image.BICUBIC), dtype=np.float32) / 255.0
    want = (torch.from_numpy(bicubic).permute(2, 0, 1) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(test(img), want, atol=1e-6, rtol=0)


def test_pad_crop_pads_with_zeros_and_crops_back_to_size():
    train, _ = build_transforms(input_cfg("INPUT.TRANSFORMS", "['pad_crop']", "INPUT.PADDING", "3",
                                          "INPUT.PIXEL_MEAN", "[0., 0., 0.]", "INPUT.PIXEL_STD", "[1., 1., 1.]"))
    img = person_image(1, size=(32, 64))  # already the train size: the resize keeps it
    padded = np.pad(np.asarray(img), ((3, 3), (3, 3), (0, 0)))
    offsets = set()
    for seed in range(12):
        torch.manual_seed(seed)
        i, j = (int(torch.randint(0, 7, (1,))) for _ in range(2))  # RandomCrop draws the row, then the column
        offsets.add((i, j))
        want = torch.from_numpy(padded[i:i + 64, j:j + 32].copy()).permute(2, 0, 1).float() / 255.0
        assert torch.equal(seeded(train, img, seed), want)
    assert len(offsets) > 3


def test_random_erase_fills_with_the_imagenet_mean():
    train, _ = build_transforms(input_cfg("INPUT.TRANSFORMS", "['random_erase']"))
    white = Image.new("RGB", (32, 64), (255, 255, 255))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    erased = 0
    for seed in range(10):
        out = seeded(train, white, seed)
        is_mean = (out == mean[:, None, None]).all(0)
        assert ((out - (1 - mean[:, None, None]) / std[:, None, None]).abs().max(0).values < 1e-6)[~is_mean].all()
        erased += bool(is_mean.any())
    assert 0 < erased < 10  # p 0.5


def test_unknown_transform_and_interpolation_are_config_errors():
    with pytest.raises(ConfigError, match="INPUT.TRANSFORMS is .*random_blur.*, each one of random_flip"):
        input_cfg("INPUT.TRANSFORMS", "['random_flip', 'random_blur']")
    with pytest.raises(ConfigError, match="INPUT.INTERPOLATION is 'nearest', expected one of bilinear, bicubic"):
        input_cfg("INPUT.INTERPOLATION", "nearest")


def test_config_rule_names_every_transform_and_interpolation():
    from hhcl_plugin.config.checks import RULES
    from hhcl_plugin.data.transforms import INTERPOLATIONS, TRAIN_TRANSFORMS

    assert set(RULES["INPUT.TRANSFORMS"].item.choices) == set(TRAIN_TRANSFORMS)
    assert set(RULES["INPUT.INTERPOLATION"].choices) == set(INTERPOLATIONS)


# ---------------------------------------------------------------------------- configs

# hhcl_r50.yml and hhcl_synth.yml as they were before the paper recipe took the official
# transforms and BatchNorm statistics (comments left out)
QUICKSTART_BEFORE = ["""
ENGINE: HHCLEngine
DATASETS:
  NAMES: ("market1501",)
  ROOT: datasets
INPUT:
  SIZE_TRAIN: [256, 128]
  SIZE_TEST: [256, 128]
  TRANSFORMS: ["random_flip", "random_crop", "random_erase"]
DATALOADER:
  NUM_INSTANCES: 16
  NUM_WORKERS: 4
MODEL:
  DEVICE: auto
  BACKBONE:
    NAME: resnet50
    PRETRAINED: True
    LAST_STRIDE: 1
  POOLING: avg
CLUSTER:
  NAME: dbscan_jaccard
  K1: 30
  K2: 6
  EPS: 0.45
  MIN_SAMPLES: 4
MEMORY:
  MODE: CMhybrid
  TEMP: 0.05
  MOMENTUM: 0.1
  HARD_WEIGHT: 0.5
SOLVER:
  OPTIMIZER: adam
  BASE_LR: 0.00035
  WEIGHT_DECAY: 0.0005
  LR_SCHEDULER: single_step
  STEP_SIZE: 20
  MAX_EPOCH: 60
  ITERS: 200
  IMS_PER_BATCH: 256
TEST:
  EVAL_PERIOD: 10
OUTPUT_DIR: output/hhcl_r50_market
""", """
DATASETS:
  NAMES: ("synthreid",)
  ROOT: datasets
  SYNTH_PRESET: default
INPUT:
  SIZE_TRAIN: [128, 64]
  SIZE_TEST: [128, 64]
  TRANSFORMS: ["random_flip", "random_crop", "random_erase", "color_jitter"]
DATALOADER:
  NUM_INSTANCES: 4
  NUM_WORKERS: 2
MODEL:
  DEVICE: auto
  BACKBONE:
    NAME: efficientnet_lite0
    LAST_STRIDE: 1
  POOLING: gem
CLUSTER:
  EPS: 0.5
  K1: 20
  K2: 6
SOLVER:
  BASE_LR: 0.001
  MAX_EPOCH: 6
  ITERS: 40
  IMS_PER_BATCH: 64
  STEP_SIZE: 5
TEST:
  EVAL_PERIOD: 3
  IMS_PER_BATCH: 128
OUTPUT_DIR: output/hhcl_synth
"""]


def test_quickstart_config_is_unchanged_and_keeps_the_old_behaviour(tmp_path):
    before = get_cfg()
    for i, text in enumerate(QUICKSTART_BEFORE):
        (tmp_path / f"{i}.yml").write_text(text)
        before.merge_from_file(str(tmp_path / f"{i}.yml"))
    now = setup_cfg(os.path.join(REPO, "configs", "hhcl_synth.yml"))
    assert now == before
    # the keys added with the official options, at the values that do what the quickstart did
    assert (now.INPUT.INTERPOLATION, now.MODEL.BN_SPLIT) == ("bilinear", 1)
    assert "pad_crop" not in now.INPUT.TRANSFORMS and now.MEMORY.MODE == "CMhybrid"  # CM_UPDATE unused


@pytest.mark.parametrize("name", ["hhcl_r50", "hhcl_r50_duke", "hhcl_r50_ibn_gem", "hhcl_r50_msmt"])
def test_paper_recipes_use_the_official_transforms_and_batchnorm_statistics(name):
    cfg = setup_cfg(os.path.join(REPO, "configs", f"{name}.yml"))
    assert list(cfg.INPUT.TRANSFORMS) == ["random_flip", "pad_crop", "random_erase"]
    assert (cfg.INPUT.PADDING, cfg.INPUT.INTERPOLATION) == (10, "bicubic")
    assert cfg.MODEL.BN_SPLIT == 4 and cfg.SOLVER.IMS_PER_BATCH // 4 == 4 * cfg.DATALOADER.NUM_INSTANCES
