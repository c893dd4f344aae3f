"""What every run does before it trains, as detectron2's ``engine/defaults.py``.

A launcher (``hhcl-train``, a project's script, a test) goes through the same three calls::

    cfg = setup_cfg(args.config_file, args.opts)   # or a project's extended defaults: setup_cfg(..., cfg=base)
    device = default_setup(cfg, args)              # checks, output folder, logger, seeds, process group
    engine = build_engine(cfg, device)             # data, model, weights and the engine of cfg.ENGINE
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

import torch
from yacs.config import CfgNode

from ..clustering import CLUSTERER_REGISTRY
from ..data import SAMPLER_REGISTRY, build_data
from ..losses import build_losses
from ..memory import MEMORY_REGISTRY
from ..modeling import build_model, resolve_device
from ..utils import comm
from ..utils.env import seed_all
from ..utils.errors import ConfigError
from ..utils.logger import setup_logger
from .build import ENGINE_REGISTRY
from .checkpoint import load_model_weights
from .run_dir import check_run_paths, shared_output_dir

if TYPE_CHECKING:  # pragma: no cover
    from .hhcl_engine import HHCLEngine

logger = logging.getLogger("hhcl_plugin")


def check_registered_parts(cfg: CfgNode) -> None:
    """Names and settings of the registered parts, checked before any work instead of at the first clustering.

    Here rather than in ``config/``, so that the config layer imports none of the parts.
    The memory's own constructor checks its settings, so a throw-away 1 x 1 memory checks them.
    """
    for key, name, registry in (("ENGINE", cfg.ENGINE, ENGINE_REGISTRY),
                                ("CLUSTER.NAME", cfg.CLUSTER.NAME, CLUSTERER_REGISTRY),
                                ("DATALOADER.SAMPLER", cfg.DATALOADER.SAMPLER, SAMPLER_REGISTRY),
                                ("MEMORY.MODE", cfg.MEMORY.MODE, MEMORY_REGISTRY)):
        try:
            registry.get(name)
        except KeyError as e:
            raise ConfigError(f"{key}: {e.args[0]}") from None
    memory = MEMORY_REGISTRY.get(cfg.MEMORY.MODE)
    try:
        memory(1, 1, **memory.kwargs_from_cfg(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    build_losses(cfg)  # LOSS.NAMES and the terms' settings


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> torch.device:
    """Checks, process group, output folder, logger, config dump and seeds; returns the training device.

    For ``--eval-only`` it points ``cfg.OUTPUT_DIR`` at the evaluation's own folder.
    """
    check_registered_parts(cfg)
    check_run_paths(cfg)
    device = resolve_device(cfg)
    if comm.init_distributed(device.type) and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    # --eval-only writes into a folder of its own; a training run holds OUTPUT_DIR's lock until release_lock
    args.output_dir = shared_output_dir(cfg.OUTPUT_DIR, getattr(args, "resume", False),
                                        getattr(args, "eval_only", False), getattr(args, "move_aside", False))
    if args.output_dir != cfg.OUTPUT_DIR:
        cfg.defrost()
        cfg.OUTPUT_DIR = args.output_dir
        cfg.freeze()
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        setup_logger(cfg.OUTPUT_DIR)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    else:  # other ranks only report problems
        setup_logger(level=logging.WARNING)
    logger.info("config %s, output in %s, %d process(es)", getattr(args, "config_file", "") or "(defaults)",
                cfg.OUTPUT_DIR, comm.get_world_size())
    # the same model initialisation everywhere (DDP also broadcasts it); per-rank augmentation
    seed_all(cfg.SEED + comm.get_rank(), cfg.DETERMINISTIC)
    return device


def build_engine(cfg: CfgNode, device: torch.device) -> "HHCLEngine":
    """Data, model (with ``MODEL.WEIGHTS``) and the engine named by ``cfg.ENGINE``, ready to run."""
    data = build_data(cfg)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(model, cfg.MODEL.WEIGHTS)
    return ENGINE_REGISTRY.get(cfg.ENGINE)(data, model, use_gpu=device.type == "cuda", cfg=cfg)

