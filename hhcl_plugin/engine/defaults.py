"""What every run does before it trains, as detectron2's ``engine/defaults.py``.

A launcher (``hhcl-train``, a project's script, a test) goes through the same three calls::

    cfg = setup_cfg(args.config_file, args.opts)   # or a project's extended defaults: setup_cfg(..., cfg=base)
    with default_setup(cfg, args) as run:          # checks, output folder (locked until the block ends), logger,
        engine = build_engine(run.cfg, run.device) # seeds, process group; data, model, weights, cfg.ENGINE's engine
        engine.run()
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Set, Tuple

import torch
from yacs.config import CfgNode

from ..clustering import CLUSTERER_REGISTRY
from ..clustering.knn import bf16_screen_mode
from ..config.config import freeze_checked, with_values
from ..data import SAMPLER_REGISTRY, build_data, check_data_paths
from ..losses import build_losses
from ..memory import MEMORY_REGISTRY
from ..modeling import build_model, resolve_device
from ..utils import comm
from ..utils.env import seed_all
from ..utils.errors import ConfigError
from ..utils.logger import setup_logger
from .build import ENGINE_REGISTRY
from .checkpoint import load_model_weights
from .resume_config import ALLOW_FLAG, CONFIG, check_resume_config, record_resume
from .run_dir import LAST, check_run_paths, release_lock, shared_output_dir, write_text

if TYPE_CHECKING:  # pragma: no cover
    from .hhcl_engine import HHCLEngine

logger = logging.getLogger("hhcl_plugin")


_CHECKED: Set[Tuple[str, ...]] = set()  # the part names and memory settings found valid in this process


def check_registered_parts(cfg: CfgNode) -> None:
    """Names and settings of the registered parts, checked before any work instead of at the first clustering.

    Here rather than in ``config/``, so that the config layer imports none of the parts.
    The memory's own constructor checks its settings, so a throw-away 1 x 1 memory checks them.
    ``default_setup`` asks first; the engine asks again for a config that did not come through
    it (a torchreid script's), and a setting found valid is not checked a second time.
    """
    for key, name, registry in (("ENGINE", cfg.ENGINE, ENGINE_REGISTRY),
                                ("CLUSTER.NAME", cfg.CLUSTER.NAME, CLUSTERER_REGISTRY),
                                ("DATALOADER.SAMPLER", cfg.DATALOADER.SAMPLER, SAMPLER_REGISTRY),
                                ("MEMORY.MODE", cfg.MEMORY.MODE, MEMORY_REGISTRY)):
        try:
            registry.get(name)
        except KeyError as e:
            raise ConfigError(f"{key}: {e.args[0]}") from None
    bf16_screen_mode()  # the k-NN's switch (HHCL_KNN_BF16) is read at every clustering: checked now
    build_losses(cfg)  # LOSS.NAMES and the terms' settings
    memory = MEMORY_REGISTRY.get(cfg.MEMORY.MODE)
    kwargs = memory.kwargs_from_cfg(cfg)
    setting = (cfg.ENGINE, cfg.CLUSTER.NAME, cfg.DATALOADER.SAMPLER, cfg.MEMORY.MODE, repr(sorted(kwargs.items())))
    if setting in _CHECKED:
        return
    try:
        memory(1, 1, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _CHECKED.add(setting)


class RunSetup:
    """What :func:`default_setup` prepared for a run, and the release of what it acquired.

    ``cfg`` is the run's config (frozen; ``OUTPUT_DIR`` is the folder the run writes to),
    ``device`` its training device.  A training run holds ``OUTPUT_DIR``'s lock from
    :func:`default_setup` on; leaving the ``with`` block (or :meth:`close`) releases it,
    whether the run ended, raised or was stopped.
    """

    def __init__(self, cfg: CfgNode, device: torch.device, locked: bool) -> None:
        self.cfg, self.device, self._locked = cfg, device, locked

    def close(self) -> None:
        if self._locked:
            self._locked = False
            release_lock(self.cfg.OUTPUT_DIR)

    def __enter__(self) -> "RunSetup":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> RunSetup:
    """Checks, process group, output folder (locked), logger, config dump and seeds; use it as a context::

        with default_setup(cfg, args) as run:
            engine = build_engine(run.cfg, run.device)
            engine.run()

    For ``--eval-only`` ``run.cfg.OUTPUT_DIR`` is the evaluation's own folder (also ``args.output_dir``).
    A config not yet frozen (``cfg.merge_from_file(...)`` without :func:`setup_cfg`) is checked and frozen
    in a copy first.  ``--resume`` keeps the run's ``config.yaml`` (how it started) and records in the
    run folder what it changes; keys that change what is trained are refused unless allowed.
    """
    if not cfg.is_frozen():
        cfg = freeze_checked(cfg.clone())
    resume, allow_changes = getattr(args, "resume", False), getattr(args, "allow_config_changes", False)
    if allow_changes and not resume:
        raise ConfigError(f"{ALLOW_FLAG} only goes with --resume; drop it, or add --resume")
    check_registered_parts(cfg)
    check_data_paths(cfg)
    check_run_paths(cfg)  # last: it creates OUTPUT_DIR
    device = resolve_device(cfg)
    if comm.init_distributed(device.type) and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    eval_only = getattr(args, "eval_only", False)
    # --eval-only writes into a folder of its own; a training run holds OUTPUT_DIR's lock until RunSetup.close
    args.output_dir = shared_output_dir(cfg.OUTPUT_DIR, resume, eval_only, getattr(args, "move_aside", False))
    setup = RunSetup(with_values(cfg, {"OUTPUT_DIR": args.output_dir if args.output_dir != cfg.OUTPUT_DIR else None}),
                     device, locked=not eval_only and comm.is_main_process())
    cfg = setup.cfg
    try:
        changes, from_epoch = check_resume_config(cfg, cfg.OUTPUT_DIR, LAST, allow_changes) if resume else ({}, 0)
        if comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            setup_logger(cfg.OUTPUT_DIR)
            if resume:
                record_resume(cfg.OUTPUT_DIR, changes, from_epoch, allow_changes)
                for key, (old, new) in changes.items():
                    logger.warning("resume: %s %r -> %r", key, old, new)
            config_path = os.path.join(cfg.OUTPUT_DIR, CONFIG)
            if not (resume and os.path.isfile(config_path)):
                write_text(config_path, cfg.dump())
        else:  # other ranks only report problems
            setup_logger(level=logging.WARNING)
        logger.info("config %s, output in %s, %d process(es)", getattr(args, "config_file", "") or "(defaults)",
                    cfg.OUTPUT_DIR, comm.get_world_size())
        # the same model initialisation everywhere (DDP also broadcasts it); per-rank augmentation
        seed_all(cfg.SEED + comm.get_rank(), cfg.DETERMINISTIC)
    except BaseException:
        setup.close()
        raise
    return setup


def build_engine(cfg: CfgNode, device: torch.device) -> "HHCLEngine":
    """Data, model (with ``MODEL.WEIGHTS``) and the engine named by ``cfg.ENGINE``, ready to run."""
    data = build_data(cfg)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(model, cfg.MODEL.WEIGHTS)
    return ENGINE_REGISTRY.get(cfg.ENGINE)(data, model, use_gpu=device.type == "cuda", cfg=cfg)

