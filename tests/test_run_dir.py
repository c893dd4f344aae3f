"""A run's output folder: never written over by another run, held by one process at a time."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import tiny_opts
from hhcl_plugin.engine import run_dir
from hhcl_plugin.engine.run_dir import acquire_lock, prepare_output_dir, release_lock
from hhcl_plugin.tools.train import main
from hhcl_plugin.utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"


def train(capsys, *args):
    code = main(["--config-file", CONFIG, *args])
    return code, capsys.readouterr().err.strip()


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    out = {}
    for d, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(d, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def earlier_run(folder):
    os.makedirs(folder)
    for name, data in (("metrics.json", b'{"evaluations": [1, 2, 3]}'), ("best.pth", b"weights"),
                       ("config.yaml", b"SEED: 1\n"), ("log.txt", b"a log\n")):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return snapshot(folder)


@pytest.fixture
def sleeper():
    """A live process of this host that is not us."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def write_lock(folder, **holder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "run.lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "since": "2026-01-01 00:00:00", **holder}, f)


def test_a_fresh_run_refuses_a_folder_holding_a_run_and_leaves_it_untouched(synth_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    before = earlier_run(out)
    code, err = train(capsys, *tiny_opts(synth_root, out))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"hhcl-train: error: OUTPUT_DIR {out} holds an earlier run (best.pth, metrics.json); continue it "
                   f"with --resume, set another OUTPUT_DIR, or add --move-aside to rename it to a new sibling folder "
                   f"first")
    assert snapshot(out) == before


def test_move_aside_keeps_the_earlier_run_and_eval_only_writes_a_folder_of_its_own(synth_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    before = earlier_run(out)
    opts = tiny_opts(synth_root, out) + ["SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS", "1"]
    assert train(capsys, "--move-aside", *opts)[0] == 0
    assert snapshot(out + ".old-1") == before
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [e["epoch"] for e in metrics["evaluations"]] == [1]
    assert not os.path.exists(os.path.join(out, "run.lock"))  # released at the end

    trained = snapshot(out)
    for n in (1, 2):  # each evaluation gets its own numbered folder
        code = main(["--config-file", CONFIG, "--eval-only", *opts, "MODEL.WEIGHTS", os.path.join(out, "best.pth")])
        assert code == 0
        results = json.load(open(os.path.join(out, "eval", str(n), "results.json")))
        assert results["evaluation"]["mAP"] == metrics["final"]["mAP"]
        assert "evaluation on synthreid" in open(os.path.join(out, "eval", str(n), "log.txt")).read()
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("eval")} == trained
    assert f"evaluation written to {os.path.join(out, 'eval', '2', 'results.json')}" in capsys.readouterr().out


def test_resume_needs_a_checkpoint_and_excludes_the_other_flags(tmp_path):
    out = str(tmp_path / "run")
    earlier_run(out)
    with pytest.raises(UserError, match=r"--resume given but .*last.pth does not exist; drop --resume to start a "
                                        r"new run \(add --move-aside to keep the files already there\)"):
        prepare_output_dir(out, resume=True)
    with pytest.raises(UserError, match="exclude each other"):
        prepare_output_dir(out, resume=True, move_aside=True)
    assert not os.path.exists(os.path.join(out, "run.lock"))


def test_a_second_process_is_refused_while_the_first_holds_the_lock(synth_root, tmp_path, capsys, sleeper):
    out = str(tmp_path / "run")
    write_lock(out, pid=sleeper.pid, started=run_dir._process_start(sleeper.pid))
    code, err = train(capsys, *tiny_opts(synth_root, out))
    assert code == 2 and len(err.splitlines()) == 1
    assert f"OUTPUT_DIR {out} is in use by another run (pid {sleeper.pid} on {socket.gethostname()}" in err
    assert f"If that run is gone, delete {os.path.join(out, 'run.lock')}" in err


@pytest.mark.parametrize("holder", [
    {"pid": 2**22 + 7},  # no such process (above the default pid_max of 2^22)
    {"pid": os.getpid()},  # our own pid, left by an earlier process (e.g. a container restarted)
    {"pid": "sleeper", "started": "0"},  # a live process with that pid, but not the one that took the lock
])
def test_a_lock_left_by_a_dead_run_is_stale(tmp_path, sleeper, holder):
    out = str(tmp_path / "run")
    holder = {**holder, "pid": sleeper.pid if holder["pid"] == "sleeper" else holder["pid"]}
    write_lock(out, **holder)
    acquire_lock(out)
    mine = json.load(open(os.path.join(out, "run.lock")))
    assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
    release_lock(out)
    assert not os.path.exists(os.path.join(out, "run.lock"))


def test_a_lock_of_another_host_is_respected(tmp_path):
    out = str(tmp_path / "run")
    write_lock(out, pid=1, host="elsewhere")
    with pytest.raises(UserError, match="in use by another run \\(pid 1 on elsewhere"):
        acquire_lock(out)


def test_a_run_that_fails_at_setup_releases_the_lock(tmp_path, capsys):
    out = str(tmp_path / "run")
    opts = ["OUTPUT_DIR", out, "DATASETS.NAMES", "('market1501',)", "DATASETS.ROOT", str(tmp_path)]
    first, second = train(capsys, *opts), train(capsys, *opts)
    assert first == second and first[0] == 2 and "dataset 'market1501' not found" in first[1]
    assert not os.path.exists(os.path.join(out, "run.lock"))
