"""Training engine, hooks, evaluation and checkpoints."""
from .build import ENGINE_REGISTRY
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from .evaluation import evaluate_retrieval, extract_features
from .hhcl_engine import HHCLEngine
from .hooks import CheckpointHook, ClusteringHook, EvalHook, HookBase

__all__ = ["ENGINE_REGISTRY", "HHCLEngine", "HookBase", "ClusteringHook", "EvalHook", "CheckpointHook",
           "load_checkpoint", "load_model_weights", "save_checkpoint", "evaluate_retrieval", "extract_features"]
