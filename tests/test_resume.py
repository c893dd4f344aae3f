"""An interrupted run resumes exactly; damaged checkpoints fall back to the previous good one."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_opts
from hhcl_plugin.engine.checkpoint import load_checkpoint, load_checkpoint_or_previous, save_checkpoint
from hhcl_plugin.tools.train import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"


def opts(root, out):
    return tiny_opts(root, out) + ["SOLVER.MAX_EPOCH", "3", "SOLVER.ITERS", "6", "DETERMINISTIC", "True"]


def wait_for_epoch(path, epoch, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isfile(path) and load_checkpoint(path)["epoch"] >= epoch:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of epoch {epoch} after {timeout}s")


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory):
    """An uninterrupted run that the interrupted ones must match."""
    ref = str(tmp_path_factory.mktemp("ref") / "run")
    assert main(["--config-file", CONFIG, *opts(synth_root, ref)]) == 0
    return ref


def interrupt_after_first_epoch(synth_root, out, signum):
    """Start a run in a subprocess, send ``signum`` once epoch 1 is saved; return its exit code and stderr."""
    # same intra-op thread count as this process: CPU reductions round differently with another split
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-m", "hhcl_plugin.tools.train", "--config-file", CONFIG,
                             *opts(synth_root, out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            # a child of a background job starts with SIGINT ignored; Python then never raises it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_epoch(os.path.join(out, "last.pth"), 1, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert load_checkpoint(os.path.join(out, "last.pth"))["epoch"] < 3
    return proc.returncode, err


def assert_resumes_to_the_reference(synth_root, out, ref):
    assert main(["--config-file", CONFIG, "--resume", *opts(synth_root, out)]) == 0
    a, b = (load_checkpoint(os.path.join(d, "last.pth")) for d in (ref, out))
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["memory"]["bank"], b["memory"]["bank"])
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])
    metrics = [json.load(open(os.path.join(d, "metrics.json"))) for d in (ref, out)]
    assert metrics[0] == metrics[1]


def test_run_killed_mid_epoch_resumes_to_identical_weights_and_metrics(synth_root, tmp_path, reference):
    killed = str(tmp_path / "killed")
    interrupt_after_first_epoch(synth_root, killed, signal.SIGKILL)
    assert os.path.isfile(os.path.join(killed, "run.lock"))  # left behind, and found stale by the resume
    assert_resumes_to_the_reference(synth_root, killed, reference)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_with_how_to_resume_and_resume_identically(synth_root, tmp_path, reference, signum):
    out = str(tmp_path / "stopped")
    code, err = interrupt_after_first_epoch(synth_root, out, signum)
    assert code == 128 + signum and "Traceback" not in err
    command = shlex.join(["hhcl-train", "--config-file", CONFIG, "--resume", *opts(synth_root, out)])
    assert err.strip().splitlines()[-1] == (f"hhcl-train: stopped by {signal.Signals(signum).name}; "
                                            f"{out}/last.pth holds the last finished epoch; resume with: {command}")
    assert not os.path.exists(os.path.join(out, "run.lock"))
    assert_resumes_to_the_reference(synth_root, out, reference)


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    path = str(tmp_path / "last.pth")
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    save_checkpoint({"epoch": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["epoch"] == 2
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # truncated on disk after the fact
    assert load_checkpoint_or_previous(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.prev.pth", "last.pth"]


def test_checkpoints_load_with_weights_only(synth_root, tmp_path):
    out = str(tmp_path / "run")
    assert main(["--config-file", CONFIG, *tiny_opts(synth_root, out), "SOLVER.MAX_EPOCH", "1"]) == 0
    ckpt = torch.load(os.path.join(out, "last.pth"), weights_only=True)
    assert {"model", "optimizer", "scheduler", "memory", "pseudo_labels", "rng", "epoch", "metrics"} <= set(ckpt)
    assert ckpt["memory"]["mode"] == "CMhybrid" and ckpt["memory"]["bank"].dtype == torch.float32
