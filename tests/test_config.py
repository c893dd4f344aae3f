import glob
import os

import pytest

from hhcl_plugin.config import get_cfg, setup_cfg
from hhcl_plugin.utils.errors import ConfigError

CONFIGS = "configs"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_overrides_are_typed_and_applied():
    cfg = setup_cfg("", ["SOLVER.BASE_LR", "0.01", "CLUSTER.EPS", "0.5", "MEMORY.MODE", "CM",
                         "INPUT.SIZE_TRAIN", "[128, 64]"])
    assert cfg.SOLVER.BASE_LR == 0.01 and cfg.CLUSTER.EPS == 0.5 and cfg.MEMORY.MODE == "CM"
    assert list(cfg.INPUT.SIZE_TRAIN) == [128, 64]
    assert cfg.is_frozen()


def test_paper_recipe_values():
    cfg = setup_cfg(f"{CONFIGS}/hhcl_r50.yml")
    assert cfg.DATASETS.NAMES == ("market1501",)
    assert (cfg.CLUSTER.K1, cfg.CLUSTER.K2, cfg.CLUSTER.EPS, cfg.CLUSTER.MIN_SAMPLES) == (30, 6, 0.45, 4)
    assert (cfg.MEMORY.MODE, cfg.MEMORY.TEMP, cfg.MEMORY.MOMENTUM, cfg.MEMORY.HARD_WEIGHT) == ("CMhybrid", 0.05, 0.1, 0.5)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.ITERS, cfg.SOLVER.IMS_PER_BATCH) == (3.5e-4, 60, 200, 256)
    assert cfg.DATALOADER.NUM_INSTANCES == 16 and cfg.MODEL.BACKBONE.NAME == "resnet50"


def test_base_inheritance_and_command_line_wins():
    cfg = setup_cfg(f"{CONFIGS}/hhcl_r50_duke.yml", ["SOLVER.MAX_EPOCH", "3"])
    assert cfg.DATASETS.NAMES == ("dukemtmcreid",)
    assert cfg.CLUSTER.EPS == 0.6  # from the child
    assert cfg.MEMORY.MODE == "CMhybrid"  # from the base
    assert cfg.SOLVER.MAX_EPOCH == 3  # from the command line


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'MODEL.NOPE'"):
        setup_cfg("", ["MODEL.NOPE", "1"])
    bad = tmp_path / "bad.yml"
    bad.write_text("SOLVER:\n  LEARNING_RATE: 0.1\n")
    with pytest.raises(ConfigError, match="SOLVER.LEARNING_RATE"):
        setup_cfg(str(bad))


@pytest.mark.parametrize("opts, pattern", [
    (["SOLVER.MAX_EPOCH", "many"], "wrong value type"),
    (["MODEL.DEVICE", "tpu"], "MODEL.DEVICE"),
    (["CLUSTER.EPS", "1.5"], "CLUSTER.EPS"),
    (["SOLVER.IMS_PER_BATCH", "100"], "multiple of"),
    (["SOLVER.BASE_LR"], "KEY VALUE"),
    (["TEST.RERANK_LAMBDA", "1.5"], r"TEST.RERANK_LAMBDA is 1.5, expected a number in \[0, 1\]"),
    (["MEMORY.MOMENTUM", "1.5"], r"MEMORY.MOMENTUM is 1.5, expected a number in \[0, 1\]"),
    (["MEMORY.TEMP", "0.0"], "MEMORY.TEMP is 0.0, expected a number > 0"),
])
def test_bad_values_are_rejected(opts, pattern):
    with pytest.raises(ConfigError, match=pattern):
        setup_cfg("", opts)


@pytest.mark.parametrize("opts, pattern", [
    # registered parts and memory settings fail before any work, not after the first feature extraction
    (["MEMORY.MODE", "CMhybird"], "MEMORY.MODE: No object named 'CMhybird' in the MEMORY registry. "
                                  "Registered names: CM, CMhard, (.*, )?CMhybrid, CMhybrid_v2"),
    (["DATALOADER.SAMPLER", "PK"], "DATALOADER.SAMPLER: No object named 'PK' in the SAMPLER registry"),
    (["ENGINE", "Trainer"], "ENGINE: No object named 'Trainer' in the ENGINE registry"),
    (["CLUSTER.NAME", "kmeans"], "CLUSTER.NAME: No object named 'kmeans' in the CLUSTERER registry"),
])
def test_bad_registered_parts_are_rejected(opts, pattern):
    from hhcl_plugin.engine.defaults import check_registered_parts

    cfg = setup_cfg("", opts)  # the config layer knows no registry
    with pytest.raises(ConfigError, match=pattern):
        check_registered_parts(cfg)


def test_base_cycle_and_missing_file(tmp_path):
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.write_text("_BASE_: b.yml\n")
    b.write_text("_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        setup_cfg(str(a))
    with pytest.raises(ConfigError, match="not found"):
        setup_cfg(str(tmp_path / "missing.yml"))


def test_defaults_are_not_mutated_by_setup():
    setup_cfg("", ["SOLVER.BASE_LR", "0.5"])
    assert get_cfg().SOLVER.BASE_LR == 3.5e-4


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.yml"))
                                        + glob.glob(os.path.join(REPO_ROOT, "projects", "*", "*.yml"))))
def test_every_shipped_config_loads(path):
    cfg = setup_cfg(path)
    assert cfg.DATASETS.NAMES and 0 < cfg.CLUSTER.EPS < 1


def test_the_config_object_merges_files_and_lists_the_way_setup_cfg_does(tmp_path):
    """detectron2's habit, cfg.merge_from_file(path), follows _BASE_ and takes CLUSTER.EPS auto."""
    base = tmp_path / "base.yml"
    base.write_text("SOLVER:\n  MAX_EPOCH: 7\nCLUSTER:\n  EPS: auto\n")
    child = tmp_path / "child.yml"
    child.write_text("_BASE_: base.yml\nSOLVER:\n  BASE_LR: 0.01\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(child))
    cfg.merge_from_list(["SOLVER.ITERS", "5"])
    assert (cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.BASE_LR, cfg.CLUSTER.EPS, cfg.SOLVER.ITERS) == (7, 0.01, "auto", 5)
    assert cfg == setup_cfg(str(child), ["SOLVER.ITERS", "5"])
    cfg.merge_from_list(["CLUSTER.EPS", "0.4"])
    assert cfg.CLUSTER.EPS == 0.4


def test_a_project_adds_value_rules_for_its_own_keys():
    from yacs.config import CfgNode

    from hhcl_plugin.config.checks import Number

    def add_project_config(cfg):
        cfg.PROJECT = CfgNode()
        cfg.PROJECT.WEIGHT = 1.0
        cfg.add_rules({"PROJECT.WEIGHT": Number(lo=0, hi=1)},
                      [(("PROJECT.WEIGHT", "MEMORY.TEMP"), lambda w, t: w <= 10 * t, "PROJECT.WEIGHT <= 10 MEMORY.TEMP")])

    base = get_cfg()
    add_project_config(base)
    assert setup_cfg("", ["PROJECT.WEIGHT", "0.5"], base.clone()).PROJECT.WEIGHT == 0.5
    with pytest.raises(ConfigError, match=r"PROJECT.WEIGHT is 2.0, expected a number in \[0, 1\]"):
        setup_cfg("", ["PROJECT.WEIGHT", "2.0"], base.clone())  # clone() keeps the project's rules
    with pytest.raises(ConfigError, match="PROJECT.WEIGHT <= 10 MEMORY.TEMP"):
        setup_cfg("", ["PROJECT.WEIGHT", "1.0", "MEMORY.TEMP", "0.05"], base.clone())
    with pytest.raises(ValueError, match="PROJECT.OTHER"):
        base.add_rules({"PROJECT.OTHER": Number()})
    setup_cfg("", ["MEMORY.TEMP", "0.05"])  # the plugin's own defaults know none of it
