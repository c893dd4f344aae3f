"""Iteration timing in the training log, and the warning when a GPU waits for data."""
import logging
from types import SimpleNamespace

import pytest
import torch

from hhcl_plugin.engine import hhcl_engine
from hhcl_plugin.engine.hhcl_engine import HHCLEngine, _IterationTimer


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_timer_splits_each_iteration_into_waiting_for_data_and_the_step(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(hhcl_engine.time, "perf_counter", clock)
    timer = _IterationTimer(images_per_iteration=64)
    for data_s, step_s in [(0.5, 1.5), (0.1, 1.9)]:  # 2 s per iteration, 0.6 s of it waiting in all
        clock.now += data_s
        timer.data_ready()
        clock.now += step_s
        timer.step_done()
    assert timer.window() == pytest.approx({"iter_s": 2.0, "data_s": 0.3, "images_per_s": 32.0})
    clock.now += 3.0  # a slow third iteration, all data
    timer.data_ready()
    timer.step_done()
    assert timer.window() == pytest.approx({"iter_s": 3.0, "data_s": 3.0, "images_per_s": 64 / 3})
    assert timer.data_share() == pytest.approx(3.6 / 7.0)  # over the epoch, not the last window


def engine_view(device):
    return SimpleNamespace(device=torch.device(device), epoch=0, warned_input_bound=False, cfg=SimpleNamespace(
        DATALOADER=SimpleNamespace(NUM_WORKERS=4)))


def test_input_bound_gpu_training_is_reported_once(caplog):
    view = engine_view("cuda")
    with caplog.at_level(logging.WARNING, logger="hhcl_plugin.engine.hhcl_engine"):
        HHCLEngine._warn_if_input_bound(view, 0.1)  # the loader keeps up: nothing to say
        assert not caplog.records
        HHCLEngine._warn_if_input_bound(view, 0.6)
        HHCLEngine._warn_if_input_bound(view, 0.7)
    assert len(caplog.records) == 1
    assert "60%" in caplog.text and "DATALOADER.NUM_WORKERS (now 4)" in caplog.text


def test_cpu_training_is_not_told_to_add_workers(caplog):
    with caplog.at_level(logging.WARNING, logger="hhcl_plugin.engine.hhcl_engine"):
        HHCLEngine._warn_if_input_bound(engine_view("cpu"), 0.9)  # workers and the step share the same cores
    assert not caplog.records
