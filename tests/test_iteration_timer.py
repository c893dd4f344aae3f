"""Iteration timing in the training log, and the warning when a GPU waits for data (the IterationTimer hook)."""
import logging
from types import SimpleNamespace

import pytest
import torch

from hhcl_plugin.engine import loop_hooks
from hhcl_plugin.engine.loop_hooks import IterationTimer


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class EngineView:
    """The engine attributes the timer reads (a plain class: hooks hold their engine by weak reference)."""

    def __init__(self, device, log_period=2, iterations=3):
        self.device, self.epoch, self.iter = torch.device(device), 0, 0
        self.train_loader = [None] * iterations
        self.cfg = SimpleNamespace(SOLVER=SimpleNamespace(IMS_PER_BATCH=64, LOG_PERIOD=log_period),
                                   DATALOADER=SimpleNamespace(NUM_WORKERS=4))
        self.speed = None


def test_timer_splits_each_iteration_into_waiting_for_data_and_the_step(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(loop_hooks.time, "perf_counter", clock)
    engine = EngineView("cpu", log_period=2, iterations=3)
    timer = IterationTimer()
    timer.engine = engine
    timer.before_epoch()
    for engine.iter, (data_s, step_s) in enumerate([(0.5, 1.5), (0.1, 1.9)]):  # 2 s per iteration, 0.6 s waiting
        clock.now += data_s
        timer.before_step()
        clock.now += step_s
        timer.after_step()
    assert engine.speed == pytest.approx({"iter_s": 2.0, "data_s": 0.3, "images_per_s": 32.0})  # a log step
    engine.iter = 2
    clock.now += 3.0  # a slow third iteration, all data
    timer.before_step()
    timer.after_step()  # the epoch's last iteration: a log step too
    assert engine.speed == pytest.approx({"iter_s": 3.0, "data_s": 3.0, "images_per_s": 64 / 3})
    assert timer.data_share() == pytest.approx(3.6 / 7.0)  # over the epoch, not the last window


def timer_on(device):
    timer = IterationTimer()
    engine = EngineView(device)
    timer.engine = engine
    return timer, engine


def test_input_bound_gpu_training_is_reported_once(caplog):
    timer, engine = timer_on("cuda")
    with caplog.at_level(logging.WARNING, logger="hhcl_plugin.engine.loop_hooks"):
        timer.warn_if_input_bound(0.1)  # the loader keeps up: nothing to say
        assert not caplog.records
        timer.warn_if_input_bound(0.6)
        timer.warn_if_input_bound(0.7)
    assert len(caplog.records) == 1
    assert "60%" in caplog.text and "DATALOADER.NUM_WORKERS (now 4)" in caplog.text


def test_cpu_training_is_not_told_to_add_workers(caplog):
    timer, _ = timer_on("cpu")
    with caplog.at_level(logging.WARNING, logger="hhcl_plugin.engine.loop_hooks"):
        timer.warn_if_input_bound(0.9)  # workers and the step share the same cores
    assert not caplog.records
