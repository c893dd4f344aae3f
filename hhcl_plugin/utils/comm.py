"""torch.distributed helpers that fall back to single-process no-ops.

Every call works whether or not a process group exists, so the engine and hooks have
one code path for one process, ``torchrun --nproc_per_node=N`` on GPUs (NCCL) and
several CPU processes (gloo, used by the tests).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, List

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device_type: str) -> bool:
    """Join the process group described by torchrun's environment; False when run alone.

    NCCL for CUDA, gloo otherwise; each CUDA process takes the GPU ``LOCAL_RANK``.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


def shutdown() -> None:
    """Leave the process group (at the end of a run)."""
    if is_distributed():
        dist.destroy_process_group()


def synchronize() -> None:
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation in rank order of every rank's ``tensor``; first dimensions may differ."""
    if get_world_size() == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    chunks = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([c[: int(s.item())] for c, s in zip(chunks, sizes)])


def all_gather_equal(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation in rank order of every rank's ``tensor``, all of the same shape.

    One collective and no host synchronisation, which is what the training step needs
    every iteration (each rank's batch has ``SOLVER.IMS_PER_BATCH`` samples);
    :func:`all_gather_tensor` takes uneven first dimensions at the cost of a size
    exchange that waits for the device.
    """
    world = get_world_size()
    if world == 1:
        return tensor
    out = tensor.new_empty((world * tensor.shape[0], *tensor.shape[1:]))
    gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # older torch: only the latter
    gather_into(out, tensor.contiguous())
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small things like pseudo labels)."""
    if get_world_size() == 1:
        return obj
    box: List[Any] = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank's buffers equal to those of rank ``src``.

    For the model's BatchNorm running statistics: DDP broadcasts buffers before each
    forward, but the last forward of an epoch leaves each rank with statistics of its own
    batch, and features for clustering, evaluation and checkpoints must not depend on
    which rank computed them.  For the memory's banks: each rank builds them, and GPU
    sums may round differently from rank to rank.
    """
    if get_world_size() == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)
