"""PersonX and Celeb-reID in their published layouts; foreign file names in benchmark layouts."""
import glob
import logging
import os
import shutil

import pytest

from conftest import tiny_opts
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.data.datasets import build_dataset
from hhcl_plugin.data.datasets.synthreid import parse_market_name
from hhcl_plugin.tools.train import main
from hhcl_plugin.utils.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERSONX_CAMS = {1: 3, 2: 4, 3: 8, 4: 10, 5: 11, 6: 12}  # PersonX's six camera numbers
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def _source(synth_root):
    return glob.glob(os.path.join(synth_root, "synthreid_tiny_s0"))[0]


def _write_as(synth_root, target, splits, rename):
    """Copy the tiny set's three splits into ``target/<splits>``, each file renamed by ``rename(pid, cam, i)``."""
    expected = {}
    for src_split, dst_split in zip(SPLITS, splits):
        os.makedirs(os.path.join(target, dst_split))
        rows = []
        for i, path in enumerate(sorted(glob.glob(os.path.join(_source(synth_root), src_split, "*.jpg")))):
            pid, cam = parse_market_name(path)
            name, camid = rename(pid, cam, i)
            shutil.copyfile(path, os.path.join(target, dst_split, name))
            rows.append((name, pid, camid))
        expected[dst_split] = rows
    return expected


def _build(name, root, *opts):
    cfg = setup_cfg("", ["DATASETS.NAMES", f"('{name}',)", "DATASETS.ROOT", root, *opts])
    return build_dataset(cfg, name)


def _named(split):
    return sorted((os.path.basename(p), pid, cam) for p, pid, cam, *_ in split)


@pytest.fixture
def personx_root(synth_root, tmp_path):
    expected = _write_as(synth_root, str(tmp_path / "PersonX"), SPLITS,
                         lambda pid, cam, i: (f"{pid:04d}_c{PERSONX_CAMS[cam]}_{i:04d}.jpg", PERSONX_CAMS[cam]))
    return str(tmp_path), expected


def test_personx_reads_identity_and_camera_from_the_names(personx_root):
    root, expected = personx_root
    dataset = _build("personx", root)
    assert _named(dataset.query) == sorted(expected["query"])
    assert _named(dataset.gallery) == sorted(expected["bounding_box_test"])
    train = _named(dataset.train)
    assert [(n, c) for n, _, c in train] == [(n, c) for n, _, c in sorted(expected["bounding_box_train"])]
    source_pids = sorted({pid for _, pid, _ in expected["bounding_box_train"]})
    assert sorted({pid for _, pid, _ in train}) == list(range(len(source_pids)))  # relabelled for training
    assert {c for *_, c in train} <= set(PERSONX_CAMS.values())


@pytest.mark.parametrize("folder", ["CelebReID", "Celeb-reID"])
def test_celebreid_in_either_published_folder_name_drops_junk(synth_root, tmp_path, folder):
    expected = _write_as(synth_root, str(tmp_path / folder), ("train", "query", "gallery"),
                         lambda pid, cam, i: (f"{pid}_{cam}_{i}.jpg", cam))
    junk = tmp_path / folder / "gallery" / "-1_1_0.jpg"
    shutil.copyfile(glob.glob(str(tmp_path / folder / "gallery" / "*.jpg"))[0], junk)
    dataset = _build("celebreid", str(tmp_path))
    assert _named(dataset.query) == sorted(expected["query"])
    assert _named(dataset.gallery) == sorted(expected["gallery"])  # without the junk image
    assert len(dataset.train) == len(expected["train"])


def test_missing_layout_names_the_expected_folders(tmp_path):
    (tmp_path / "PersonX" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        _build("personx", str(tmp_path))
    message = str(err.value)
    assert "PersonX/{bounding_box_train,query,bounding_box_test}" in message
    assert "contains [bounding_box_train]" in message


def test_empty_split_is_a_dataset_error(personx_root):
    root, _ = personx_root
    for path in glob.glob(os.path.join(root, "PersonX", "query", "*.jpg")):
        os.remove(path)
    with pytest.raises(DatasetError, match="empty split"):
        _build("personx", root)


@pytest.fixture
def market_with_foreign_file(synth_root, tmp_path):
    market = tmp_path / "market1501" / "Market-1501-v15.09.15"
    for split in SPLITS:
        shutil.copytree(os.path.join(_source(synth_root), split), market / split)
    first = sorted(glob.glob(str(market / "bounding_box_train" / "*.jpg")))[0]
    foreign = market / "bounding_box_train" / "IMG_20240101_1234.jpg"
    shutil.copyfile(first, foreign)
    return str(tmp_path), str(foreign)


def test_foreign_file_name_is_one_line_naming_file_and_pattern(market_with_foreign_file, tmp_path, capsys):
    root, foreign = market_with_foreign_file
    out = tmp_path / "out"
    code = main(["--config-file", f"{REPO}/configs/hhcl_synth.yml",
                 *tiny_opts(root, str(out)), "DATASETS.NAMES", "('market1501',)"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert foreign in err and r"(-1|\d+)_c([1-6])" in err and "DATALOADER.ON_BAD_IMAGE skip" in err
    assert not (out / "last.pth").exists()


def test_foreign_file_names_are_skipped_with_a_count(market_with_foreign_file, caplog):
    root, foreign = market_with_foreign_file
    with caplog.at_level(logging.WARNING):
        dataset = _build("market1501", root, "DATALOADER.ON_BAD_IMAGE", "skip")
    assert foreign not in {p for p, *_ in dataset.train}
    assert len(dataset.train) == len(glob.glob(os.path.join(os.path.dirname(foreign), "*.jpg"))) - 1
    assert "skipping 1 file(s) not named like" in caplog.text


def test_foreign_file_in_personx_is_named_and_skippable(personx_root, caplog):
    root, expected = personx_root
    foreign = os.path.join(root, "PersonX", "query", "crop.jpg")
    shutil.copyfile(glob.glob(os.path.join(root, "PersonX", "query", "*.jpg"))[0], foreign)
    with pytest.raises(DatasetError, match="crop.jpg is not named like a personx image"):
        _build("personx", root)
    dataset = _build("personx", root, "DATALOADER.ON_BAD_IMAGE", "skip")
    assert _named(dataset.query) == sorted(expected["query"])
