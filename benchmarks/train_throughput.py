"""Training throughput: images/s of the full HHCL step, fp32 against mixed precision, and the
share of the step spent in the memory (logits, loss, its backward, the bank update).

The step is the one ``HHCLEngine.forward_backward`` runs (autocast forward, float32 memory
loss, backward with the bank update, optimiser step, the loss read back for the NaN check) on
synthetic images already on the device, so data loading is not part of it.  The memory's share
is given two ways: its part timed alone on the step's own features, and the step's time less
that of the same step with a stand-in loss that needs no memory (a fixed linear function of
the features; the two steps run in turn and the difference is taken per pair).  On a GPU the
two differ: inside the step the memory's kernel launches overlap the backbone's kernels still
queued on the device, alone they do not.  Weights are random
(``MODEL.BACKBONE.PRETRAINED False``): speed does not depend on them.

Usage::

    python benchmarks/train_throughput.py                                  # ResNet-50, 256x128, batch 64 and 256
    python benchmarks/train_throughput.py --batches 16 --iters 3 MODEL.BACKBONE.NAME resnet18   # a quick CPU look
    python benchmarks/train_throughput.py MEMORY.MODE CM --batches 64 256  # overrides go before list flags
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hhcl_plugin.config import setup_cfg  # noqa: E402
from hhcl_plugin.memory import build_memory  # noqa: E402
from hhcl_plugin.modeling import build_model, resolve_device  # noqa: E402
from hhcl_plugin.tools.cli import add_config_arguments, parse_command_line  # noqa: E402

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def interleaved_ms(steps: List[Callable[[], None]], iters: int, warmup: int, device: torch.device) -> List[List[float]]:
    """Milliseconds of each of ``steps`` over ``iters`` rounds, the steps run in turn (A B A B ...)
    so that drifting clocks and host load hit them alike; the device synchronised around each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps:
            step()
    times: List[List[float]] = [[] for _ in steps]
    for _ in range(iters):
        for step, own in zip(steps, times):
            sync()
            start = time.perf_counter()
            step()
            sync()
            own.append(1000 * (time.perf_counter() - start))
    return times


def measure(cfg, device: torch.device, batch: int, precision: str, clusters: int, iters: int, warmup: int,
            channels_last: bool) -> List:
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    amp_dtype = AMP_DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    k = cfg.DATALOADER.NUM_INSTANCES
    init_feats = F.normalize(torch.randn(clusters * k, model.feat_dim, device=device), dim=1)
    memory = build_memory(cfg, init_feats, torch.arange(clusters, device=device).repeat_interleave(k))
    height, width = cfg.INPUT.SIZE_TRAIN
    images = torch.randn(batch, 3, height, width, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randperm(clusters, device=device)[: max(1, batch // k)].repeat_interleave(k)[:batch]
    # stand-in loss: as cheap as a loss can be, with gradients of a training-like size (no fp16 overflow)
    direction = F.normalize(torch.randn(model.feat_dim, device=device), dim=0) / batch
    features_seen = {}

    def memory_loss(features: torch.Tensor) -> torch.Tensor:
        return sum(memory(features, targets).values())

    def train_step(loss_of: Callable[[torch.Tensor], torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            features = model(images)
        loss = loss_of(features.float())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        float(loss.detach())  # the engine reads the loss back every step (NaN check)
        scaler.step(optimizer)
        scaler.update()
        features_seen["x"] = features.detach().float()

    def memory_step() -> None:
        memory_loss(features_seen["x"].clone().requires_grad_()).backward()

    steps, bare_steps = interleaved_ms(
        [lambda: train_step(memory_loss), lambda: train_step(lambda f: (f @ direction).sum())], iters, warmup, device)
    step_ms, bare_ms = statistics.median(steps), statistics.median(bare_steps)
    in_step_ms = statistics.median([a - b for a, b in zip(steps, bare_steps)])  # paired: one round's conditions
    memory_ms = statistics.median(interleaved_ms([memory_step], iters, warmup, device)[0])
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else "-"
    return [batch, precision, f"{batch * 1000 / step_ms:.1f}", f"{step_ms:.1f}", f"{bare_ms:.1f}",
            f"{memory_ms:.2f}", f"{100 * memory_ms / step_ms:.1f}%", f"{100 * in_step_ms / step_ms:.1f}%", peak]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.set_defaults(config_file="configs/hhcl_r50.yml")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--precisions", nargs="+", choices=sorted(AMP_DTYPES), default=None,
                        help="default: fp32 and fp16 on CUDA (bf16 too where supported), fp32 and bf16 on CPU")
    parser.add_argument("--clusters", type=int, default=700)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW on CUDA")
    args = parse_command_line(parser, argv)
    cfg = setup_cfg(args.config_file, ["MODEL.BACKBONE.PRETRAINED", "False", *args.opts])
    device = resolve_device(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        precisions = args.precisions or (["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else []))
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
        precisions = args.precisions or ["fp32", "bf16"]
    channels_last = device.type == "cuda" and not args.no_channels_last
    rows = [measure(cfg, device, batch, precision, args.clusters, args.iters, args.warmup, channels_last)
            for batch in args.batches for precision in precisions]
    height, width = cfg.INPUT.SIZE_TRAIN
    print(f"HHCL training step: {cfg.MODEL.BACKBONE.NAME} at {height}x{width}, {cfg.MEMORY.MODE} memory with "
          f"{args.clusters} clusters, {name}, channels_last {channels_last}; medians of {args.iters} steps "
          f"(with the memory and with the stand-in loss in turn)")
    print(tabulate(rows, headers=["batch", "precision", "images/s", "step ms", "step ms, stand-in loss",
                                  "memory ms alone", "memory share alone", "memory share in step",
                                  "peak GPU GiB"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
