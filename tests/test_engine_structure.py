"""The engine's extension surface: hooks from build_hooks, explicit hand-offs, default setup, config layering."""
import ast
import gc
import glob
import os

import pytest
from yacs.config import CfgNode

from conftest import tiny_opts
from hhcl_plugin.config import get_cfg, setup_cfg
from hhcl_plugin.data import build_data
from hhcl_plugin.engine import CheckpointHook, ClusteringHook, EvalHook, HHCLEngine, HookBase, ReportHook
from hhcl_plugin.engine.defaults import default_setup
from hhcl_plugin.engine.hooks import check_hook_order
from hhcl_plugin.engine.loop_hooks import IterationTimer, LRScheduler, TensorBoardWriter
from hhcl_plugin.modeling import build_model
from hhcl_plugin.tools.train import build_parser
from hhcl_plugin.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"


def test_default_hooks_are_in_an_order_that_hands_every_value_over():
    defaults = [ClusteringHook(), IterationTimer(), TensorBoardWriter(), LRScheduler(), EvalHook(), CheckpointHook(),
                ReportHook()]
    check_hook_order(defaults, HHCLEngine.reads)  # does not raise
    with pytest.raises(ValueError, match="CheckpointHook reads engine.evaluation, which no hook before it writes"):
        check_hook_order([ClusteringHook(), CheckpointHook(), EvalHook()], HHCLEngine.reads)
    with pytest.raises(ValueError, match="the training step reads engine.memory, engine.train_loader"):
        check_hook_order([ReportHook()], HHCLEngine.reads)
    with pytest.raises(ValueError, match="TensorBoardWriter reads engine.speed"):
        check_hook_order([ClusteringHook(), TensorBoardWriter(), IterationTimer()], HHCLEngine.reads)


class EngineView:
    """A stand-in engine; a plain class, since hooks hold their engine by weak reference."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def test_a_hook_holds_its_engine_weakly():
    hook, engine = CheckpointHook(), EngineView()
    hook.engine = engine
    assert hook.engine is engine
    del engine
    gc.collect()
    with pytest.raises(RuntimeError, match="CheckpointHook is not registered with a live engine"):
        hook.engine


def test_checkpoint_hook_decides_best_from_the_epochs_evaluation(tmp_path):
    saved = []
    engine = EngineView(best_mAP=-1.0, evaluation=None, save=saved.append)
    hook = CheckpointHook()
    hook.engine = engine
    for evaluation in (None, {"mAP": 10.0}, {"mAP": 5.0}, None, {"mAP": 12.5}):
        engine.evaluation = evaluation
        hook.after_epoch()
    assert saved == ["last.pth", "last.pth", "best.pth", "last.pth", "last.pth", "last.pth", "best.pth"]
    assert engine.best_mAP == 12.5


class Recorder(HookBase):
    """Appended by a project through build_hooks; records the stages it saw."""

    def __init__(self, stages):
        self.stages = stages

    def before_train(self):
        self.stages.append("before_train")

    def before_epoch(self):
        self.stages.append(f"before_epoch {self.engine.epoch}: {len(self.engine.train_loader)} batches")
        raise RuntimeError("stop here")

    def after_train(self):
        self.stages.append("after_train")


def test_a_subclass_adds_a_hook_and_after_train_runs_when_training_raises(synth_root, tmp_path):
    stages = []

    class ProjectEngine(HHCLEngine):
        def build_hooks(self):
            return super().build_hooks() + [Recorder(stages)]

    cfg = setup_cfg(CONFIG, tiny_opts(synth_root, str(tmp_path)) + ["SOLVER.MAX_EPOCH", "1"])
    with default_setup(cfg, build_parser().parse_args([])) as run:
        engine = ProjectEngine(build_data(run.cfg), build_model(run.cfg), use_gpu=run.device.type == "cuda",
                               cfg=run.cfg)
        assert [type(h).__name__ for h in engine.hooks] == ["ClusteringHook", "IterationTimer", "TensorBoardWriter",
                                                            "LRScheduler", "EvalHook", "CheckpointHook", "ReportHook",
                                                            "Recorder"]
        with pytest.raises(RuntimeError, match="stop here"):
            engine.run()
    assert stages == ["before_train", "before_epoch 0: 2 batches", "after_train"]
    assert os.path.isfile(tmp_path / "plots" / "retrieval.png")  # ReportHook ran after the failure too


def test_default_setup_checks_parts_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    cfg = setup_cfg("", ["MEMORY.MODE", "CMfancy", "OUTPUT_DIR", str(out)])
    with pytest.raises(ConfigError, match="MEMORY.MODE: No object named 'CMfancy'"):
        default_setup(cfg, build_parser().parse_args([]))
    assert not out.exists()
    cfg = setup_cfg("", ["MODEL.DEVICE", "cpu", "SEED", "7", "OUTPUT_DIR", str(out)])
    with default_setup(cfg, build_parser().parse_args([])) as run:
        assert run.device.type == "cpu" and run.cfg.OUTPUT_DIR == str(out) and run.cfg.is_frozen()
        assert os.path.isfile(out / "run.lock")  # the training run holds its folder
        assert setup_cfg(str(out / "config.yaml")).SEED == 7
        assert "output in " + str(out) in open(out / "log.txt").read()
    assert not os.path.exists(out / "run.lock")  # and gives it back when the block ends
    args = build_parser().parse_args(["--eval-only"])
    with default_setup(cfg, args) as run:  # an evaluation gets a folder of its own, in its config
        assert run.cfg.OUTPUT_DIR == args.output_dir == str(out / "eval" / "1") and cfg.OUTPUT_DIR == str(out)


def add_example_config(cfg: CfgNode) -> None:
    """A project's keys, added to the plugin's defaults as detectron2's projects do."""
    cfg.EXAMPLE = CfgNode()
    cfg.EXAMPLE.WEIGHT = 1.0


def test_a_project_extends_the_config_and_get_cfg_keeps_the_defaults(tmp_path):
    path = tmp_path / "project.yml"
    path.write_text(f"_BASE_: {CONFIG}\nEXAMPLE:\n  WEIGHT: 0.25\n")
    base = get_cfg()
    add_example_config(base)
    cfg = setup_cfg(str(path), ["SOLVER.MAX_EPOCH", "2"], cfg=base)
    assert cfg.EXAMPLE.WEIGHT == 0.25 and cfg.SOLVER.MAX_EPOCH == 2 and cfg.MODEL.BACKBONE.NAME == "efficientnet_lite0"
    assert "EXAMPLE" not in get_cfg()
    with pytest.raises(ConfigError, match="unknown config key 'EXAMPLE'"):
        setup_cfg(str(path))


def test_the_config_layer_imports_none_of_the_parts():
    parts = {"clustering", "data", "engine", "memory", "modeling", "deploy", "tools"}
    for path in glob.glob(f"{REPO}/hhcl_plugin/config/*.py"):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert (node.module or "").split(".")[0] not in parts, (path, node.module)
