"""Source stage of domain adaptation: ``hhcl-train-source --config-file F KEY VALUE ...``.

Trains the plugin's model with identity labels on the dataset of ``DATASETS.NAMES`` using
torchreid's own supervised engines (``ImageSoftmaxEngine`` or ``ImageTripletEngine``,
``SOURCE.LOSS``), then evaluates it there.  torchreid writes the checkpoint as it always
does, ``OUTPUT_DIR/model/model.pth.tar-<SOLVER.MAX_EPOCH>``; an HHCL run on the unlabelled
target starts from it with ``MODEL.WEIGHTS`` (see ``projects/uda``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Iterator, List, Optional

from ..utils.errors import ConfigError
from .cli import add_config_arguments, parse_command_line, run_cli

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import DataLoader
    from yacs.config import CfgNode

    from ..utils import torchreid_compat as tr

logger = logging.getLogger("hhcl_plugin")


def source_checkpoint(cfg: "CfgNode") -> str:
    """Where torchreid's engine writes the last epoch's checkpoint."""
    return os.path.join(cfg.OUTPUT_DIR, "model", f"model.pth.tar-{cfg.SOLVER.MAX_EPOCH}")


class _EpochLoader:
    """A loader whose sampler draws new P x K batches every pass (torchreid's engine never calls set_epoch)."""

    def __init__(self, loader: "DataLoader") -> None:
        self.loader, self.epoch = loader, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        self.loader.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)


def build_source_engine(cfg: "CfgNode", use_gpu: bool) -> "tr.Engine":
    """torchreid's supervised engine over the labelled train split, the plugin's model and data."""
    from ..data import build_data, build_test_loader, build_train_loader, build_train_sampler
    from ..engine.checkpoint import load_model_weights
    from ..modeling import build_model
    from ..modeling.supervised import SupervisedReIDModel
    from ..utils import torchreid_compat as tr

    data = build_data(cfg)
    num_classes = len({pid for _, pid, _ in data.train})
    sampler = build_train_sampler(cfg, data.train, seed=cfg.SEED)
    train_loader = _EpochLoader(build_train_loader(cfg, data.train, data.transform_train, sampler))
    test = {data.name: {"query": build_test_loader(cfg, data.query, data.transform_test),
                        "gallery": build_test_loader(cfg, data.gallery, data.transform_test)}}
    datamanager = SimpleNamespace(train_loader=train_loader, test_loader=test, sources=[data.name],
                                  targets=[data.name], num_train_pids=num_classes, data_type="image")
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(model, cfg.MODEL.WEIGHTS)
    model = SupervisedReIDModel(model, num_classes)
    model = model.cuda() if use_gpu else model
    optimizer = tr.build_optimizer(model, optim=cfg.SOLVER.OPTIMIZER, lr=cfg.SOLVER.BASE_LR,
                                   weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    scheduler = tr.build_lr_scheduler(optimizer, lr_scheduler=cfg.SOLVER.LR_SCHEDULER, stepsize=cfg.SOLVER.STEP_SIZE,
                                      gamma=cfg.SOLVER.GAMMA, max_epoch=cfg.SOLVER.MAX_EPOCH)
    logger.info("source training on %s: %d identities, %d images, torchreid's %s", data.name, num_classes,
                len(data.train), "ImageTripletEngine" if cfg.SOURCE.LOSS == "softmax_triplet" else "ImageSoftmaxEngine")
    if cfg.SOURCE.LOSS == "softmax_triplet":
        return tr.ImageTripletEngine(datamanager, model, optimizer, margin=cfg.SOURCE.TRIPLET_MARGIN,
                                            scheduler=scheduler, use_gpu=use_gpu, label_smooth=cfg.SOURCE.LABEL_SMOOTH)
    return tr.ImageSoftmaxEngine(datamanager, model, optimizer, scheduler=scheduler, use_gpu=use_gpu,
                                        label_smooth=cfg.SOURCE.LABEL_SMOOTH)


def run(args: argparse.Namespace, cfg: Optional["CfgNode"] = None) -> int:
    from ..config import setup_cfg  # the training stack is imported once the command line is read
    from ..engine import default_setup

    cfg = setup_cfg(args.config_file, args.opts, cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("hhcl-train-source runs in one process (torchreid's supervised engines have no "
                          "DistributedDataParallel); start it without torchrun")
    with default_setup(cfg, args) as run_setup:
        cfg = run_setup.cfg
        engine = build_source_engine(cfg, use_gpu=run_setup.device.type == "cuda")
        engine.run(save_dir=cfg.OUTPUT_DIR, max_epoch=cfg.SOLVER.MAX_EPOCH, print_freq=cfg.SOLVER.LOG_PERIOD,
                   eval_freq=cfg.TEST.EVAL_PERIOD, dist_metric=cfg.TEST.DIST_METRIC, normalize_feature=True,
                   ranks=list(cfg.TEST.RANKS))
        logger.info("source model written by torchreid to %s; start the target run with MODEL.WEIGHTS %s",
                    source_checkpoint(cfg), source_checkpoint(cfg))
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhcl-train-source", description="Supervised training on a labelled source dataset with torchreid's engine",
        epilog="Example: hhcl-train-source --config-file projects/uda/configs/source_synth.yml")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None, cfg: Optional["CfgNode"] = None) -> int:
    return run_cli("hhcl-train-source", lambda args: run(args, cfg), parse_command_line(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
