"""Memory loss + bank update per training step: vectorised memories against the per-sample loop.

Per mode, three timings of the bank update and one of the whole memory step:

* *update*: the update alone, called as the training step calls it: the memories with
  a hard bank are handed each sample's similarity to its own hard row, which the
  forward's logits hold;
* *standalone update*: ``memory.update(features, targets)``, which computes them;
* *update in the step*: the update timed inside whole memory steps (logits, loss,
  backward, update) run in turn with the loop's steps.  Right after the step's large
  products the CPU caches hold none of the code and data of the update's few distinct
  tensor operations, and on a 2-core machine each then costs several times its warm
  time; the loop repeats the same few operations per sample and warms up after one;
* *step*: the whole memory step, whose cost is mostly the two (B x D) by (D x R*C)
  products that both implementations share;
* *GPU-layout ops*: the tensor operations one update dispatches with the fixed-shape
  groups a GPU uses (views and allocations not counted): each is a kernel launch there,
  and at small batches a GPU step is bound by the host issuing them.

The loop is :mod:`hhcl_plugin.testing.memory_reference`, written the way the official code
updates its banks (group the batch by cluster, then one row at a time); both run in the
same process on the same inputs, and the table gives medians over ``--repeats`` pairs.

Usage::

    python benchmarks/train_step.py [--batch 256 --clusters 700 --dim 2048 --instances 16 --repeats 20]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hhcl_plugin.config import get_cfg  # noqa: E402
from hhcl_plugin.memory import build_memory  # noqa: E402
from hhcl_plugin.testing.memory_reference import banks_of, reference_loss, reference_update_  # noqa: E402

MODES = ("CM", "CMhard", "CMhybrid", "CMhybrid_v2")


def paired_median_ms(fast: Callable[[], None], slow: Callable[[], None], repeats: int,
                     warmup: int = 2) -> Tuple[float, float, float]:
    """Medians (ms) of the two, run in turn (A B A B ...) so that drifting machine speed hits both,
    and the median of the per-pair ratios slow / fast."""
    for _ in range(warmup):
        fast()
        slow()
    times: Dict[str, List[float]] = {"fast": [], "slow": []}
    for _ in range(repeats):
        for name, step in (("fast", fast), ("slow", slow)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ratios = [s / f for f, s in zip(times["fast"], times["slow"])]
    return 1000 * statistics.median(times["fast"]), 1000 * statistics.median(times["slow"]), statistics.median(ratios)


class _OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it, less views and bare allocations."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket not in (torch.ops.aten.empty, torch.ops.aten.empty_strided,
                                                                torch.ops.aten.empty_like):
            self.count += 1
        return func(*args, **(kwargs or {}))


def gpu_layout_ops(memory, feats: torch.Tensor, targets: torch.Tensor, own_sims: Optional[torch.Tensor]) -> int:
    """Operations of one update through the GPU's fixed-shape groups (run on a copy of the memory)."""
    probe = copy.deepcopy(memory)
    probe.fixed_shapes = True
    with _OpCounter() as counter:
        probe.update(feats, targets, hard_sims=own_sims)
    return counter.count


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=700)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    n_init = args.clusters * args.instances
    init_feats = F.normalize(torch.randn(n_init, args.dim, generator=g), dim=1)
    init_labels = torch.arange(args.clusters).repeat_interleave(args.instances)
    # a P x K batch: batch / instances clusters, instances samples each
    p = args.batch // args.instances
    targets = torch.randperm(args.clusters, generator=g)[:p].repeat_interleave(args.instances)
    feats = F.normalize(torch.randn(args.batch, args.dim, generator=g), dim=1)

    rows = []
    for mode in MODES:
        cfg = get_cfg()
        cfg.MEMORY.MODE = mode
        cfg.DATALOADER.NUM_INSTANCES = args.instances
        memory = build_memory(cfg, init_feats, init_labels, generator=torch.Generator().manual_seed(0))
        banks = banks_of(memory)
        # what the forward hands the update (rows 0..C-1 are the hard bank)
        own_sims = (feats * memory.bank.index_select(0, targets)).sum(1) if memory.has_hard_bank else None
        gpu_ops = gpu_layout_ops(memory, feats, targets, own_sims)
        update_times: Dict[str, List[float]] = {"fast": [], "slow": []}
        train_update = memory.update

        def timed_update(*update_args, **update_kwargs) -> None:  # called by the memory's backward
            start = time.perf_counter()
            train_update(*update_args, **update_kwargs)
            update_times["fast"].append(time.perf_counter() - start)

        memory.update = timed_update

        def vectorised_step() -> None:
            x = feats.clone().requires_grad_()
            sum(memory(x, targets).values()).backward()

        def loop_step() -> None:
            x = feats.clone().requires_grad_()
            reference_loss(mode, banks, x, targets, temp=memory.temp).backward()
            start = time.perf_counter()
            reference_update_(banks, x, targets, momentum=memory.momentum, centroid_update=memory.centroid_update)
            update_times["slow"].append(time.perf_counter() - start)

        def update_as_called() -> None:
            train_update(feats, targets, hard_sims=own_sims)

        def standalone_update() -> None:
            train_update(feats, targets)

        def loop_update() -> None:
            reference_update_(banks, feats, targets, momentum=memory.momentum,
                              centroid_update=memory.centroid_update)

        called_fast, called_slow, called_ratio = paired_median_ms(update_as_called, loop_update, args.repeats)
        alone_fast, _, alone_ratio = paired_median_ms(standalone_update, loop_update, args.repeats)
        step_fast, step_slow, step_ratio = paired_median_ms(vectorised_step, loop_step, args.repeats)
        warm = len(update_times["fast"]) - args.repeats  # the warm-up steps
        fast, slow = update_times["fast"][warm:], update_times["slow"][warm:]
        upd_ratio = statistics.median(s / f for f, s in zip(fast, slow))
        rows.append([mode, called_fast, called_slow, f"{called_ratio:.1f}x", alone_fast, f"{alone_ratio:.1f}x",
                     1000 * statistics.median(fast), 1000 * statistics.median(slow), f"{upd_ratio:.1f}x",
                     step_fast, step_slow, f"{step_ratio:.1f}x", gpu_ops])
    print(f"memory loss + bank update per step: B={args.batch} (P={p} x K={args.instances}), C={args.clusters}, "
          f"D={args.dim}, CPU, {torch.get_num_threads()} threads, median of {args.repeats} interleaved pairs")
    print(tabulate(rows, headers=["mode", "update: vectorised ms", "loop ms", "speed-up", "standalone ms", "speed-up",
                                  "update in step ms", "loop ms", "speed-up", "step ms", "loop ms", "speed-up",
                                  "GPU-layout ops"],
                   floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
