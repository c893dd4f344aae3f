"""``--resume`` keeps the run what it was; an integer for a float key is that float everywhere."""
import json
import os

import pytest
import yaml

from conftest import tiny_opts
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.engine.checkpoint import load_checkpoint
from hhcl_plugin.engine.resume_config import config_changes, is_free_key
from hhcl_plugin.tools.train import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"


def train(capsys, *args):
    code = main(["--config-file", CONFIG, *args])
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def one_epoch_run(synth_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, _ = train(capsys, *tiny_opts(synth_root, out), "SOLVER.MAX_EPOCH", "1")
    assert code == 0
    with open(os.path.join(out, "config.yaml")) as f:
        original = f.read()
    return out, original


def test_resume_refuses_a_key_that_changes_what_is_trained(synth_root, one_epoch_run, capsys):
    out, original = one_epoch_run
    code, err = train(capsys, "--resume", *tiny_opts(synth_root, out), "MEMORY.MODE", "CM", "SOLVER.MAX_EPOCH", "2",
                      "SOLVER.BASE_LR", "0.01")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "MEMORY.MODE is 'CMhybrid' in the run, 'CM' given" in err
    assert "SOLVER.BASE_LR is 0.001 in the run, 0.01 given" in err
    assert "SOLVER.MAX_EPOCH" not in err  # a key that may change is not named
    assert "--allow-config-changes" in err
    assert load_checkpoint(os.path.join(out, "last.pth"))["epoch"] == 1  # nothing trained
    assert open(os.path.join(out, "config.yaml")).read() == original
    assert not os.path.exists(os.path.join(out, "resumes.json"))


def test_resume_takes_keys_that_may_change_and_records_them(synth_root, one_epoch_run, capsys):
    out, original = one_epoch_run
    code, err = train(capsys, "--resume", *tiny_opts(synth_root, out), "SOLVER.MAX_EPOCH", "2",
                      "TEST.EVAL_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0")
    assert code == 0, err
    assert load_checkpoint(os.path.join(out, "last.pth"))["epoch"] == 2
    assert open(os.path.join(out, "config.yaml")).read() == original  # how the run started
    resumes = json.load(open(os.path.join(out, "resumes.json")))
    assert len(resumes) == 1 and resumes[0]["from_epoch"] == 1 and not resumes[0]["allow_config_changes"]
    assert resumes[0]["changes"] == {"SOLVER.MAX_EPOCH": {"run": 1, "given": 2},
                                     "TEST.EVAL_PERIOD": {"run": 1, "given": 2}}
    assert resumes[0]["changes_what_is_trained"] == []


def test_allow_config_changes_trains_on_and_the_run_records_it(synth_root, one_epoch_run, capsys):
    out, original = one_epoch_run
    code, err = train(capsys, "--resume", "--allow-config-changes", *tiny_opts(synth_root, out),
                      "MEMORY.MODE", "CM", "SOLVER.MAX_EPOCH", "2")
    assert code == 0, err
    resumes = json.load(open(os.path.join(out, "resumes.json")))
    assert resumes[-1]["allow_config_changes"] and resumes[-1]["changes_what_is_trained"] == ["MEMORY.MODE"]
    assert resumes[-1]["changes"]["MEMORY.MODE"] == {"run": "CMhybrid", "given": "CM"}
    assert open(os.path.join(out, "config.yaml")).read() == original
    assert yaml.safe_load(load_checkpoint(os.path.join(out, "last.pth"))["config"])["MEMORY"]["MODE"] == "CM"


def test_allow_config_changes_without_resume_is_refused(synth_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, err = train(capsys, "--allow-config-changes", *tiny_opts(synth_root, out))
    assert code == 2 and "--allow-config-changes only goes with --resume" in err
    assert not os.path.exists(out)


def test_changes_compare_values_not_their_spelling():
    run = {"SOLVER": {"BASE_LR": 1.0, "MAX_EPOCH": 6}, "DATASETS": {"NAMES": ["synthreid"]}}
    given = {"SOLVER": {"BASE_LR": 1, "MAX_EPOCH": 8}, "DATASETS": {"NAMES": ("synthreid",)}}
    assert config_changes(run, given) == {"SOLVER.MAX_EPOCH": (6, 8)}
    assert is_free_key("SOLVER.MAX_EPOCH") and is_free_key("TEST.RERANK") and is_free_key("MODEL.DEVICE")
    assert not is_free_key("MEMORY.MODE") and not is_free_key("SOLVER.BASE_LR") and not is_free_key("TESTING")


def test_an_integer_for_a_float_key_is_that_float_everywhere(tmp_path):
    cfg = setup_cfg(CONFIG, ["SOLVER.BASE_LR", "1", "MEMORY.TEMP", "1"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert isinstance(cfg.MEMORY.TEMP, float)
    base = tmp_path / "base.yml"
    base.write_text(f"_BASE_: {CONFIG}\nMEMORY:\n  MOMENTUM: 1\n")
    child = tmp_path / "child.yml"
    child.write_text("_BASE_: base.yml\nSOLVER:\n  BASE_LR: 2\n  MAX_EPOCH: 3\n")
    cfg = setup_cfg(str(child))
    assert cfg.SOLVER.BASE_LR == 2.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.MEMORY.MOMENTUM == 1.0 and isinstance(cfg.MEMORY.MOMENTUM, float)
    assert cfg.SOLVER.MAX_EPOCH == 3 and isinstance(cfg.SOLVER.MAX_EPOCH, int)  # ints stay ints
