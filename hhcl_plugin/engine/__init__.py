"""Training engine, hooks, evaluation, checkpoints and the default setup of a run."""
from .build import ENGINE_REGISTRY
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from .evaluation import evaluate_retrieval, extract_features
from .hhcl_engine import HHCLEngine
from .hooks import CheckpointHook, ClusteringHook, EvalHook, HookBase
from .report import ReportHook
from .defaults import build_engine, check_registered_parts, default_setup  # noqa: E402  (needs the engine registered)

__all__ = ["ENGINE_REGISTRY", "HHCLEngine", "HookBase", "ClusteringHook", "EvalHook", "CheckpointHook", "ReportHook",
           "build_engine", "check_registered_parts", "default_setup",
           "load_checkpoint", "load_model_weights", "save_checkpoint", "evaluate_retrieval", "extract_features"]
