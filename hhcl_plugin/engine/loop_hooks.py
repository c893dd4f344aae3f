"""The hooks of the training loop itself: iteration timing, the LR step, TensorBoard and the log lines.

As detectron2's ``IterationTimer``, ``LRScheduler`` and ``PeriodicWriter``: the engine's
loop only fetches batches and runs the step; these hooks measure, step and write around
it, and a project replaces or drops one in ``build_hooks`` like any other hook.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Dict

from ..utils import comm
from .hooks import HookBase

logger = logging.getLogger(__name__)


def is_log_step(engine) -> bool:
    """Whether the engine's current iteration ends a ``SOLVER.LOG_PERIOD`` window (or the epoch)."""
    done, total = engine.iter + 1, len(engine.train_loader)
    return done % engine.cfg.SOLVER.LOG_PERIOD == 0 or done == total


class IterationTimer(HookBase):
    """Seconds per iteration and the part spent waiting for the batch, as detectron2 logs them.

    ``engine.speed`` holds the means of the window that ends at a log step (``iter_s``,
    ``data_s``, ``images_per_s``).  The step ends with the loss read back to the host, so on
    a GPU the wall time is the device's time too.  After each epoch it says, once per run,
    when a GPU waited for the data loader.
    """

    writes = ("speed",)

    def __init__(self) -> None:
        self.warned_input_bound = False
        self.reset(0)

    def reset(self, images_per_iteration: int) -> None:
        self.images = images_per_iteration
        self.end = self.fetched = time.perf_counter()
        self.epoch_data = self.epoch_total = 0.0
        self.window_data = self.window_total = 0.0
        self.window_iterations = 0

    def data_ready(self) -> None:
        self.fetched = time.perf_counter()

    def step_done(self) -> None:
        now = time.perf_counter()
        data, total = self.fetched - self.end, now - self.end
        self.end = now
        self.epoch_data += data
        self.epoch_total += total
        self.window_data += data
        self.window_total += total
        self.window_iterations += 1

    def window(self) -> Dict[str, float]:
        """Means since the previous call."""
        n = max(self.window_iterations, 1)
        speed = {"iter_s": self.window_total / n, "data_s": self.window_data / n,
                 "images_per_s": self.images * n / self.window_total if self.window_total > 0 else 0.0}
        self.window_data = self.window_total = 0.0
        self.window_iterations = 0
        return speed

    def data_share(self) -> float:
        return self.epoch_data / self.epoch_total if self.epoch_total > 0 else 0.0

    # the hook's stages
    def before_epoch(self) -> None:
        self.reset(self.engine.cfg.SOLVER.IMS_PER_BATCH * comm.get_world_size())

    def before_step(self) -> None:
        self.data_ready()

    def after_step(self) -> None:
        self.step_done()
        if is_log_step(self.engine):
            self.engine.speed = self.window()

    def after_epoch(self) -> None:
        self.warn_if_input_bound(self.data_share())

    def warn_if_input_bound(self, data_share: float) -> None:
        """Say once when the GPU waits for images: the recipe's 4 workers feed ~1,600 images/s
        at 256x128 (about 400 per core measured on a CPU), a few times less than a recent GPU trains."""
        eng = self.engine
        if eng.device.type != "cuda" or data_share < 0.25 or self.warned_input_bound:
            return
        self.warned_input_bound = True
        logger.warning("epoch %d: training waited for the data loader %.0f%% of the time; raise "
                       "DATALOADER.NUM_WORKERS (now %d) up to the CPU cores available",
                       eng.epoch + 1, 100 * data_share, eng.cfg.DATALOADER.NUM_WORKERS)


class LRScheduler(HookBase):
    """Steps the engine's LR schedulers after every epoch (before the checkpoint saves their state)."""

    def after_epoch(self) -> None:
        self.engine.update_lr()


class NoWriter:
    """Stands in for the TensorBoard writer where none is open (ranks other than 0, outside a run)."""

    def add_scalar(self, *args, **kwargs) -> None: ...
    def close(self) -> None: ...


class TensorBoardWriter(HookBase):
    """``engine.writer`` (TensorBoard, in ``OUTPUT_DIR/tensorboard``, rank 0) for the run, and the training's
    scalars and log lines: ``train/*`` every step, ``time/*`` and a log line every ``SOLVER.LOG_PERIOD``
    steps, ``train/lr`` every epoch.  The other hooks write their own scalars through ``engine.writer``.
    """

    reads = ("speed",)

    def open(self) -> None:
        eng = self.engine
        if comm.is_main_process():
            from torch.utils.tensorboard import SummaryWriter  # TensorBoard's import is slow: only for a run

            eng.writer = SummaryWriter(log_dir=os.path.join(eng.cfg.OUTPUT_DIR, "tensorboard"))

    def close(self) -> None:
        self.engine.writer.close()

    def before_train(self) -> None:
        self.open()

    def after_step(self) -> None:
        eng = self.engine
        step = eng.epoch * len(eng.train_loader) + eng.iter
        if is_log_step(eng):
            means = {k: v / (eng.iter + 1) for k, v in eng.epoch_loss_sums.items()}
            eng.progress_bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
            speed = eng.speed
            logger.info("epoch %d iter %d/%d  %s  lr %.2e  %.3f s/it (data %.3f)  %.0f img/s", eng.epoch + 1,
                        eng.iter + 1, len(eng.train_loader), "  ".join(f"{k} {v:.4f}" for k, v in means.items()),
                        eng.get_current_lr(), speed["iter_s"], speed["data_s"], speed["images_per_s"])
            for key, value in speed.items():
                eng.writer.add_scalar(f"time/{key}", value, step)
        for key, value in eng.step_losses.items():
            eng.writer.add_scalar(f"train/{key}", value, step)

    def after_epoch(self) -> None:
        eng = self.engine
        eng.writer.add_scalar("train/lr", eng.get_current_lr(), eng.epoch)

    def after_train(self) -> None:
        self.close()
