"""The ``folder`` dataset: own crops with any names, three camera options, optional evaluation, one camera."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from conftest import tiny_opts
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.data import build_data
from hhcl_plugin.data.samplers import CameraAwarePKSampler
from hhcl_plugin.data.datasets.synthreid import parse_market_name
from hhcl_plugin.engine.evaluation import evaluate_retrieval
from hhcl_plugin.tools.train import main
from hhcl_plugin.utils.errors import ConfigError, DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_SPLITS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}


def lay_out(synth_root, target, splits=("train", "query", "gallery")):
    """The tiny set as own crops: train files renamed ``img<i>_c<cam>.png``-style into nested folders
    (camera folder ``cam<cam>`` one level up), query/gallery under ``person<pid>/``.  Returns
    ``{copied path: (pid, cam)}``."""
    truth = {}
    source = glob.glob(os.path.join(synth_root, "synthreid_tiny_s0"))[0]
    for src_split, split in SOURCE_SPLITS.items():
        if split not in splits:
            continue
        for i, path in enumerate(sorted(glob.glob(os.path.join(source, src_split, "*.jpg")))):
            pid, cam = parse_market_name(path)
            if split == "train":
                rel = f"day{i % 3}/cam{cam}/img{i:05d}_c{cam}.jpg"
            else:
                rel = f"person{pid}/cam{cam}/shot{i:05d}_c{cam}.jpg"
            dst = os.path.join(target, split, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(path, dst)
            truth[dst] = (pid, cam)
    return truth


@pytest.fixture
def folder_root(synth_root, tmp_path):
    root = str(tmp_path / "crops")
    return root, lay_out(synth_root, root)


def _data(root, camera="none"):
    return build_data(setup_cfg("", ["DATASETS.NAMES", "('folder',)", "DATASETS.ROOT", root,
                                     "DATASETS.FOLDER.CAMERA", camera]))


def _is_bijection(pairs):
    """Whether ``(a, b)`` pairs map a's one to one onto b's."""
    pairs = set(pairs)
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_camera_none_is_one_camera_and_no_train_identity(folder_root):
    root, truth = folder_root
    data = _data(root, "none")
    assert len(data.train) == sum("/train/" in p for p in truth)
    assert {cam for *_, cam in data.train + data.query + data.gallery} == {0}
    assert {pid for _, pid, _ in data.train} == {0}


@pytest.mark.parametrize("camera", ["dir", r"_c(\d+)\."])
def test_camera_from_folder_or_expression_recovers_the_cameras(folder_root, camera):
    root, truth = folder_root
    data = _data(root, camera)
    items = data.train + data.query + data.gallery
    assert len({cam for *_, cam in items}) == 6
    # one id per source camera, the same in every split
    assert _is_bijection((truth[p][1], cam) for p, _, cam in items)


def test_identity_is_the_first_folder_under_query_and_gallery(folder_root):
    root, truth = folder_root
    data = _data(root)
    assert len(data.query) == sum("/query/" in p for p in truth)
    evaluated = data.query + data.gallery
    assert _is_bijection((truth[p][0], pid) for p, pid, _ in evaluated)
    assert {pid for _, pid, _ in data.query} <= {pid for _, pid, _ in data.gallery}


def test_without_query_and_gallery_there_is_nothing_to_evaluate(synth_root, tmp_path):
    root = str(tmp_path / "crops")
    lay_out(synth_root, root, splits=("train",))
    data = _data(root)
    assert data.train and not data.query and not data.gallery and not data.has_evaluation


def test_layout_errors_name_the_problem(synth_root, tmp_path):
    root = str(tmp_path / "crops")
    with pytest.raises(DatasetError, match="train"):
        _data(root)
    lay_out(synth_root, root, splits=("train", "query"))
    with pytest.raises(DatasetError, match="has query/ but no gallery/"):
        _data(root)
    os.makedirs(os.path.join(root, "gallery"))
    loose = os.path.join(root, "gallery", "loose.jpg")
    shutil.copyfile(next(iter(glob.glob(os.path.join(root, "query", "*", "*", "*.jpg")))), loose)
    with pytest.raises(DatasetError, match="loose.jpg is not in an identity folder"):
        _data(root)


def test_camera_expression_errors(folder_root):
    root, _ = folder_root
    for bad in ("c(\\d+)_(x)", "c\\d+", "c(\\d+"):
        with pytest.raises(ConfigError, match="DATASETS.FOLDER.CAMERA"):
            _data(root, bad)
    expected = r"train/day0/cam\d/img\d+_c\d.jpg does not match DATASETS.FOLDER.CAMERA '_x\(\\d\+\)'"
    with pytest.raises(DatasetError, match=expected):
        _data(root, "_x(\\d+)")


def test_one_camera_sampler_draws_k_distinct_images():
    # identity 0 has 10 images, identity 1 has 4, identity 2 has 2: all in camera 0
    items = [(f"{i}.jpg", pid, 0) for i, pid in enumerate([0] * 10 + [1] * 4 + [2] * 2)]
    sampler = CameraAwarePKSampler(items, batch_size=12, num_instances=4, num_iters=20, seed=0)
    indices = np.fromiter(sampler, dtype=np.int64).reshape(-1, 4)
    for group in indices:
        pids = {items[i][1] for i in group}
        assert len(pids) == 1
        distinct = len(set(group.tolist()))
        assert distinct == min(4, sum(p == items[group[0]][1] for _, p, _ in items))


def test_one_camera_evaluation_keeps_same_camera_matches():
    # query 0 matches gallery 0 (same identity, same camera); gallery 1 is another identity
    qf = np.array([[1.0, 0.0]], dtype=np.float32)
    gf = np.array([[0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    import torch

    one_cam = evaluate_retrieval(torch.from_numpy(qf), torch.from_numpy(gf), np.array([5]), np.array([5, 7]),
                                 np.array([0]), np.array([0, 0]), ranks=(1,))
    assert one_cam["mAP"] == 100.0 and one_cam["rank1"] == 100.0
    # with two cameras the Market-1501 protocol applies: the same-camera match is dropped, no valid query
    with pytest.raises(AssertionError):
        evaluate_retrieval(torch.from_numpy(qf), torch.from_numpy(gf), np.array([5]), np.array([5, 7]),
                           np.array([0]), np.array([0, 1]), ranks=(1,))


def _train(root, out, *opts):
    return main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", *tiny_opts(root, out),
                 "DATASETS.NAMES", "('folder',)", *opts])


def test_two_epochs_with_one_camera_evaluate_without_same_camera_exclusion(folder_root, tmp_path):
    root, _ = folder_root
    out = str(tmp_path / "out")
    assert _train(root, out, "DATASETS.FOLDER.CAMERA", "none") == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [e["epoch"] for e in metrics["evaluations"]] == [1, 2]
    assert 0 < metrics["final"]["mAP"] <= 100
    log = open(os.path.join(out, "log.txt")).read()
    assert "retrieval protocol: one camera (no same-camera exclusion" in log
    assert os.path.isfile(os.path.join(out, "best.pth"))
    assert glob.glob(os.path.join(out, "ranked", "*.jpg"))


def test_training_without_query_and_gallery_keeps_cluster_statistics(synth_root, tmp_path):
    root = str(tmp_path / "crops")
    lay_out(synth_root, root, splits=("train",))
    out = str(tmp_path / "out")
    assert _train(root, out, "DATASETS.FOLDER.CAMERA", "dir") == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert all(e["clusters"] > 0 and 0 <= e["outlier_ratio"] < 1 for e in metrics["epochs"])
    assert "initial" not in metrics and not metrics["evaluations"]
    assert os.path.isfile(os.path.join(out, "last.pth")) and not os.path.exists(os.path.join(out, "best.pth"))
    log = open(os.path.join(out, "log.txt")).read()
    assert "training without evaluation" in log and "clusters per epoch" in log and "mAP" not in log
