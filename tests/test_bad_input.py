"""Bad input from the command line: one clear line, exit code 2, nothing lost."""
import glob
import os
import shutil

import pytest
import torch

from conftest import tiny_opts
from hhcl_plugin.engine.checkpoint import load_checkpoint
from hhcl_plugin.memory import ClusterMemory
from hhcl_plugin.tools.cli import one_line
from hhcl_plugin.tools.train import main
from hhcl_plugin.utils.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"


def run(capsys, *args):
    code = main(["--config-file", CONFIG, *args])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def damaged_root(synth_root, tmp_path):
    """A copy of the tiny set with one garbage file and one truncated JPEG among the train images."""
    root = str(tmp_path / "datasets")
    shutil.copytree(synth_root, root)
    train = sorted(glob.glob(os.path.join(root, "*", "bounding_box_train", "*.jpg")))
    with open(train[3], "wb") as f:
        f.write(b"not an image at all")
    data = open(train[7], "rb").read()
    with open(train[7], "wb") as f:
        f.write(data[: len(data) // 3])
    return root, [train[3], train[7]]


def test_bad_image_error_policy_names_the_file(damaged_root, tmp_path, capsys):
    root, bad = damaged_root
    code, err = run(capsys, *tiny_opts(root, str(tmp_path / "out")))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "cannot read image" in err and any(os.path.basename(b) in err for b in bad)
    assert "DATALOADER.ON_BAD_IMAGE skip" in err


def test_bad_image_skip_policy_drops_and_counts_them(damaged_root, tmp_path, capsys):
    root, _ = damaged_root
    out = str(tmp_path / "out")
    code, _ = run(capsys, *tiny_opts(root, out), "DATALOADER.ON_BAD_IMAGE", "skip", "SOLVER.MAX_EPOCH", "1")
    assert code == 0
    assert "train: skipped 2 unreadable image(s)" in open(os.path.join(out, "log.txt")).read()


def test_worker_wrapped_error_is_reduced_to_its_message():
    wrapped = DatasetError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File \"x.py\", line 1\nhhcl_plugin.utils.errors.DatasetError: cannot read "
                           "image a.jpg (broken)")
    assert one_line(wrapped) == "cannot read image a.jpg (broken)"


@pytest.mark.parametrize("key, value, expected", [
    ("MEMORY.MODE", "CMfancy", "No object named 'CMfancy' in the MEMORY registry. Registered names: CM, CMhard"),
    ("DATALOADER.SAMPLER", "Random", "No object named 'Random' in the SAMPLER registry"),
    ("SOLVER.MAX_EPOCH", "many", "wrong value type"),
    ("DATALOADER.ON_BAD_IMAGE", "ignore", "DATALOADER.ON_BAD_IMAGE is 'ignore', expected one of error, skip"),
])
def test_bad_config_values_are_one_line(synth_root, tmp_path, capsys, key, value, expected):
    code, err = run(capsys, *tiny_opts(synth_root, str(tmp_path)), key, value)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert expected in err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synth_root, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    forward = ClusterMemory.forward
    calls = {"n": 0}

    def poisoned(self, features, targets):
        calls["n"] += 1
        terms = forward(self, features, targets)
        if calls["n"] > 2:  # epoch 1 (2 iterations) is fine, epoch 2 diverges
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    monkeypatch.setattr(ClusterMemory, "forward", poisoned)
    code, err = run(capsys, *tiny_opts(synth_root, out), "SOLVER.MAX_EPOCH", "3")
    assert code == 2 and "loss became nan at epoch 2" in err
    last = load_checkpoint(os.path.join(out, "last.pth"))
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values()
                                      if v.is_floating_point())


def test_empty_split_of_a_real_dataset_layout_is_named(synth_root, tmp_path, capsys):
    src = glob.glob(os.path.join(synth_root, "*"))[0]
    market = tmp_path / "market1501" / "Market-1501-v15.09.15"
    shutil.copytree(os.path.join(src, "bounding_box_train"), market / "bounding_box_train")
    shutil.copytree(os.path.join(src, "bounding_box_test"), market / "bounding_box_test")
    (market / "query").mkdir()
    code, err = run(capsys, *tiny_opts(str(tmp_path), str(tmp_path / "out")), "DATASETS.NAMES", "('market1501',)")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "empty" in err and "market1501" in err


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return str(path)


@pytest.mark.parametrize("key, value, expected", [
    ("OUTPUT_DIR", "{file}", "OUTPUT_DIR {file} is a file, not a folder"),
    ("OUTPUT_DIR", "{file}/run", "OUTPUT_DIR {file}/run cannot be created: {file} is a file"),
    ("DATASETS.ROOT", "{file}/datasets", "DATASETS.ROOT (where synthreid is generated) {file}/datasets cannot be "
                                         "created: {file} is a file"),
    ("DATASETS.ROOT", "{file}", "DATASETS.ROOT {file} is a file, not a folder"),
    ("MODEL.WEIGHTS", "{file}.pth", "MODEL.WEIGHTS {file}.pth does not exist; give a checkpoint file, a URL or zoo:NAME"),
    ("MODEL.WEIGHTS", "{dir}", "MODEL.WEIGHTS {dir} is a folder; give the checkpoint file in it"),
])
def test_bad_paths_are_one_line_before_any_work(tmp_path, capsys, a_file, key, value, expected):
    out = str(tmp_path / "out")
    fill = dict(file=a_file, dir=str(tmp_path))
    code, err = run(capsys, "OUTPUT_DIR", out, key, value.format(**fill))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert expected.format(**fill) in err
    assert key == "OUTPUT_DIR" or not os.path.exists(out)  # refused before anything was written


def test_a_config_file_that_is_a_folder_is_named(tmp_path, capsys):
    code = main(["--config-file", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"hhcl-train: error: config file {tmp_path} is a folder; give a YAML file, e.g. " \
                                "configs/hhcl_synth.yml"


@pytest.mark.parametrize("tool", ["embed", "export"])
def test_embed_and_export_check_their_output_before_any_work(tmp_path, capsys, a_file, tool):
    import importlib

    tool_main = importlib.import_module(f"hhcl_plugin.tools.{tool}").main
    flags = ["--input", str(tmp_path)] if tool == "embed" else ["--format", "onnx"]
    for output, expected in ((str(tmp_path), f"--output {tmp_path} is a folder"),
                             (f"{a_file}/model.out", f"--output {a_file}/model.out cannot be created: "
                                                     f"{a_file} is a file")):
        code = tool_main(["--config-file", CONFIG, *flags, "--output", output, "MODEL.WEIGHTS", f"{a_file}.pth"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"hhcl-{tool}: error: {expected}")
    code = tool_main(["--config-file", CONFIG, *flags, "--output", str(tmp_path / "x.out"),
                      "MODEL.WEIGHTS", f"{a_file}.pth"])
    assert code == 2 and f"MODEL.WEIGHTS {a_file}.pth does not exist" in capsys.readouterr().err


def test_an_output_dir_without_write_permission_is_named(tmp_path, capsys):
    # root may write anywhere a permission bit forbids (os.access says yes to root), so the
    # folders are ones nobody can create: a new entry under /proc; as another user also a chmod 555 folder
    folders = ["/proc/hhcl-out", "/proc/hhcl-out/run"]
    if os.geteuid() != 0:
        read_only = tmp_path / "read_only"
        read_only.mkdir()
        read_only.chmod(0o555)
        folders += [str(read_only), str(read_only / "run")]
    for out in folders:
        code, err = run(capsys, "OUTPUT_DIR", out)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"hhcl-train: error: OUTPUT_DIR {out} cannot be ")
        assert any(reason in err for reason in ("No such file or directory", "Permission denied",
                                                "Read-only file system")), err
