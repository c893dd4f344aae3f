"""OS errors on the paths the tools create and write: one line, exit code 2, nothing lost.

Paths under ``/proc`` cannot be created by anyone, root included (``os.access`` would say
yes to root); ``/dev/full`` fails every write with ENOSPC, a full disk.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_opts
from hhcl_plugin.engine.checkpoint import load_checkpoint, save_checkpoint
from hhcl_plugin.engine.run_dir import write_json
from hhcl_plugin.utils import paths
from hhcl_plugin.utils.errors import OutputPathError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"
REASONS = ("No such file or directory", "Permission denied", "Read-only file system")


def tool(name, *args):
    """Run ``hhcl-<name>`` in a new process; its exit code and stderr."""
    proc = subprocess.run([sys.executable, "-m", f"hhcl_plugin.tools.{name}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr.strip()


def assert_one_line(code, err, *parts):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    assert any(reason in err for reason in REASONS), err


def test_a_dataset_root_that_cannot_be_created_is_one_line(tmp_path):
    out = tmp_path / "out"
    code, err = tool("train", "--config-file", CONFIG, *tiny_opts("/proc/hhcl-data", str(out)))
    assert_one_line(code, err, "DATASETS.ROOT", "/proc/hhcl-data")
    assert not out.exists()  # refused before any work


def test_an_output_dir_that_cannot_be_created_is_one_line(synth_root):
    code, err = tool("train", "--config-file", CONFIG, *tiny_opts(synth_root, "/proc/hhcl-run/out"))
    assert_one_line(code, err, "OUTPUT_DIR", "/proc/hhcl-run/out")


@pytest.mark.parametrize("name, flags", [("export", ["--format", "onnx"]), ("embed", ["--input", "."])])
def test_export_and_embed_outputs_that_cannot_be_created_are_one_line(name, flags):
    code, err = tool(name, "--config-file", CONFIG, *flags, "--output", "/proc/nope/model.out")
    assert_one_line(code, err, "--output", "/proc/nope")


@pytest.mark.parametrize("name, flags", [("export", ["--format", "onnx"]), ("embed", ["--input", "."])])
def test_a_device_as_output_is_refused(name, flags):
    code, err = tool(name, "--config-file", CONFIG, *flags, "--output", "/dev/full")
    assert code == 2 and len(err.splitlines()) == 1
    assert "--output /dev/full exists and is not a regular file" in err


@pytest.fixture
def disk_full(monkeypatch):
    """Every atomic write of the package goes to /dev/full: each write fails with ENOSPC."""
    def full(fd):
        os.close(fd)
        return open("/dev/full", "wb")
    monkeypatch.setattr(paths, "open_for_write", full)


def test_a_full_disk_while_saving_last_pth_keeps_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    paths.register_output(str(tmp_path), "OUTPUT_DIR")
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path, keep_previous=True)
    with monkeypatch.context() as patch:
        patch.setattr(paths, "open_for_write", lambda fd: (os.close(fd), open("/dev/full", "wb"))[1])
        with pytest.raises(OutputPathError) as caught:
            save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path, keep_previous=True)
    message = str(caught.value)
    assert "No space left on device" in message and path in message and "OUTPUT_DIR" in message
    assert "the previous last.pth is intact" in message and "\n" not in message
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["last.pth"]  # no temporary file left behind


def test_a_full_disk_while_writing_metrics_keeps_the_previous_file(tmp_path, disk_full, monkeypatch):
    path = str(tmp_path / "metrics.json")
    with open(path, "w") as f:
        json.dump({"epoch": 1}, f)
    with pytest.raises(OutputPathError, match="No space left on device.*the previous metrics.json is intact"):
        write_json(path, {"epoch": 2})
    assert json.load(open(path)) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_an_os_error_under_a_registered_output_names_its_key(tmp_path):
    paths.register_output(str(tmp_path / "run"), "OUTPUT_DIR")
    error = OSError(28, "No space left on device", str(tmp_path / "run" / "plots" / "loss.png"))
    line = paths.describe_os_error(error)
    assert "OUTPUT_DIR" in line and "plots/loss.png" in line and "No space left on device" in line
    assert paths.describe_os_error(OSError(2, "No such file or directory", "/elsewhere/x")) is None
