"""Camera-aware proxies: construction, loss and gradient against a slow loop, update, refusals, AMP."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hhcl_plugin.config.config import get_cfg
from hhcl_plugin.losses import CameraProxyLoss, Clustering, build_losses
from hhcl_plugin.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = 8


def clustering(seed=0, n=60, clusters=5, cameras=(1, 3, 4, 7)):
    """Random unit features, labels with outliers, cameras with non-contiguous ids."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(clusters), n // clusters)
    labels[rng.choice(n, 6, replace=False)] = -1
    cams = rng.choice(np.asarray(cameras), size=n)
    feats = F.normalize(torch.from_numpy(rng.standard_normal((n, D))), dim=1)  # float64
    return Clustering(feats, labels, cams, memory=None)


def built(c, **kwargs):
    loss = CameraProxyLoss(**kwargs)
    loss.on_clustering(c)
    return loss


def test_one_proxy_per_seen_cluster_camera_pair_at_the_members_mean():
    c = clustering()
    loss = built(c)
    pairs = sorted({(int(lab), int(cam)) for lab, cam in zip(c.labels, c.cameras) if lab >= 0})
    assert loss.proxies.shape == (len(pairs), D) and loss.proxies.dtype == torch.float64
    assert loss.camera_ids.tolist() == sorted(set(c.cameras.tolist()))
    for lab, cam in pairs:
        members = (c.labels == lab) & (c.cameras == cam)
        expected = F.normalize(c.features[torch.from_numpy(members)].mean(0), dim=0)
        p = int(loss.lookup[lab, loss.camera_ids.tolist().index(cam)])
        assert p >= 0 and int(loss.proxy_cluster[p]) == lab
        assert int(loss.camera_ids[loss.proxy_camera[p]]) == cam
        assert torch.allclose(loss.proxies[p], expected, atol=1e-12)
    assert int((loss.lookup >= 0).sum()) == len(pairs)  # unseen pairs have no proxy


def slow_reference(features, targets, cameras, proxies, pairs, temp, inter_weight, k):
    """The two terms written sample by sample (torch scalars, for the gradient), from the papers' definitions."""
    intra, inter = [], []
    for f, y, cam in zip(features, targets.tolist(), cameras.tolist()):
        sims = {pair: (f * proxies[i]).sum() / temp for i, pair in enumerate(pairs)}
        own_cam = {pair: s for pair, s in sims.items() if pair[1] == cam}
        intra.append(-(own_cam[(y, cam)] - torch.log(sum(torch.exp(s) for s in own_cam.values()))))
        pos = [s for pair, s in sims.items() if pair[0] == y]
        neg = sorted((s for pair, s in sims.items() if pair[0] != y), key=float, reverse=True)[:k]
        log_norm = torch.log(sum(torch.exp(s) for s in pos + neg))
        inter.append(sum(log_norm - s for s in pos) / len(pos))
    return sum(intra) / len(intra), inter_weight * sum(inter) / len(inter)


@pytest.mark.parametrize("k", [3, 50])  # fewer negatives than other-cluster proxies, and more
def test_loss_and_gradient_match_a_loop_over_samples(k):
    c = clustering()
    loss = built(c, temp=0.1, inter_weight=0.5, hard_negatives=k, weight=1.0)
    pairs = [(int(loss.proxy_cluster[i]), int(loss.camera_ids[loss.proxy_camera[i]])) for i in range(len(loss.proxies))]
    idx = torch.tensor([i for i, lab in enumerate(c.labels) if lab >= 0][:12])
    feats, targets = c.features[idx], torch.as_tensor(c.labels[idx.numpy()])
    cams = torch.as_tensor(c.cameras[idx.numpy()])
    x = feats.clone().requires_grad_()
    terms = loss(x, targets, cams)
    sum(terms.values()).backward()
    x_ref = feats.clone().requires_grad_()
    intra, inter = slow_reference(x_ref, targets, cams, loss.proxies, pairs, 0.1, 0.5, k)
    assert terms["loss_cam_intra"].item() == pytest.approx(float(intra), rel=1e-10)
    assert terms["loss_cam_inter"].item() == pytest.approx(float(inter), rel=1e-10)
    (intra + inter).backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-10)
    assert x.grad.abs().sum() > 0


def test_weight_scales_both_terms():
    c = clustering()
    idx = torch.tensor([i for i, lab in enumerate(c.labels) if lab >= 0][:8])
    args = (c.features[idx], torch.as_tensor(c.labels[idx.numpy()]), torch.as_tensor(c.cameras[idx.numpy()]))
    one, three = built(c, weight=1.0)(*args), built(c, weight=3.0)(*args)
    for key in one:
        assert three[key].item() == pytest.approx(3 * one[key].item())


@pytest.mark.parametrize("fixed_shapes", [False, True])  # the CPU grouping and the GPU's fixed shapes
def test_momentum_update_moves_the_batch_proxies_towards_their_batch_mean(fixed_shapes):
    c = clustering()
    loss = built(c, momentum=0.3)
    loss.fixed_shapes = fixed_shapes
    before = loss.proxies.clone()
    g = torch.Generator().manual_seed(1)
    idx = torch.tensor([i for i, lab in enumerate(c.labels) if lab >= 0][:10])
    feats = F.normalize(torch.randn(len(idx), D, generator=g, dtype=torch.float64), dim=1)
    targets, cams = torch.as_tensor(c.labels[idx.numpy()]), torch.as_tensor(c.cameras[idx.numpy()])
    loss.update(feats, targets, cams)
    own = loss.proxy_of(targets, cams)
    for p in range(len(before)):
        members = own == p
        if members.any():
            expected = F.normalize(0.3 * before[p] + 0.7 * feats[members].mean(0), dim=0)
            assert torch.allclose(loss.proxies[p], expected, atol=1e-12), p
        else:
            assert torch.equal(loss.proxies[p], before[p]), p


def test_the_loss_is_the_same_under_cpu_autocast_bf16():
    c = clustering()
    loss = built(c)
    idx = torch.tensor([i for i, lab in enumerate(c.labels) if lab >= 0][:8])
    args = (c.features[idx].float(), torch.as_tensor(c.labels[idx.numpy()]), torch.as_tensor(c.cameras[idx.numpy()]))
    loss.proxies = loss.proxies.float()
    plain = loss(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(*args)
    for key in plain:
        assert mixed[key].dtype == torch.float32 and torch.equal(mixed[key], plain[key])


def test_one_camera_is_refused():
    with pytest.raises(ConfigError, match="at least two"):
        CameraProxyLoss().check_data([3, 3, 3])
    CameraProxyLoss().check_data([1, 2])  # two cameras: accepted


def test_registry_selects_and_refuses_by_name():
    cfg = get_cfg()
    cfg.LOSS.NAMES = ("memory", "camera_proxy")
    assert list(build_losses(cfg).terms) == ["memory", "camera_proxy"]
    cfg.LOSS.NAMES = ("memory", "nope")
    with pytest.raises(ConfigError, match="LOSS.NAMES"):
        build_losses(cfg)
    cfg.LOSS.NAMES = ("memory", "memory")
    with pytest.raises(ConfigError, match="twice"):
        build_losses(cfg)


@pytest.mark.parametrize("opts, expected", [
    (["DATASETS.NAMES", "('folder',)", "DATASETS.FOLDER.CAMERA", "none"], "DATASETS.FOLDER.CAMERA is none"),
    (["LOSS.CAMERA.TEMP", "0.0"], "LOSS.CAMERA.TEMP is 0.0"),
])
def test_cli_refuses_camera_proxies_without_cameras_in_one_line(tmp_path, opts, expected):
    proc = subprocess.run([sys.executable, "-m", "hhcl_plugin.tools.train", "LOSS.NAMES", "('memory', 'camera_proxy')",
                           *opts, "OUTPUT_DIR", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_the_memory_entry_gives_the_memorys_own_terms_and_gradient(weight):
    from hhcl_plugin.memory import build_memory

    c = clustering()
    cfg = get_cfg()
    cfg.LOSS.MEMORY.WEIGHT = weight
    losses = build_losses(cfg)
    assert list(losses.terms) == ["memory"] and not losses.has_batch_state  # the engine then updates as before
    valid = torch.from_numpy(c.labels >= 0)
    memories = [build_memory(cfg, c.features[valid], c.labels[valid.numpy()]) for _ in range(2)]
    losses.on_clustering(Clustering(c.features, c.labels, c.cameras, memories[0]))
    idx = torch.arange(8)
    feats, targets = c.features[valid][idx], torch.as_tensor(c.labels[valid.numpy()][idx.numpy()])
    x, y = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    mine, direct = losses(x, targets, None), memories[1](y, targets)
    assert list(mine) == list(direct)
    for key in mine:
        assert torch.equal(mine[key], weight * direct[key])
    sum(mine.values()).backward()
    (weight * sum(direct.values())).backward()
    assert torch.equal(x.grad, y.grad) and torch.equal(memories[0].bank, memories[1].bank)  # same update too
