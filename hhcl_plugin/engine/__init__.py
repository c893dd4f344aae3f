"""Training engine, hooks, evaluation, checkpoints and the default setup of a run."""
from .build import ENGINE_REGISTRY
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from .evaluation import evaluate_retrieval
from .features import extract_features
from .hhcl_engine import HHCLEngine, ImageHHCLEngine
from .hooks import CheckpointHook, ClusteringHook, EvalHook, HookBase
from .loop_hooks import IterationTimer, LRScheduler, TensorBoardWriter
from .report import ReportHook
from .defaults import build_engine, check_registered_parts, default_setup

__all__ = ["ENGINE_REGISTRY", "HHCLEngine", "ImageHHCLEngine", "HookBase", "ClusteringHook", "EvalHook",
           "CheckpointHook", "ReportHook", "IterationTimer", "LRScheduler", "TensorBoardWriter", "build_engine",
           "check_registered_parts", "default_setup",
           "load_checkpoint", "load_model_weights", "save_checkpoint", "evaluate_retrieval", "extract_features"]
