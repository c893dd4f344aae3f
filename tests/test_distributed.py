"""DDP on CPU (gloo, two processes): synchronised memory banks, pseudo labels and weights."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from conftest import tiny_opts
from hhcl_plugin.config.config import get_cfg
from hhcl_plugin.memory import build_memory
from hhcl_plugin.utils import comm
from hhcl_plugin.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ["CM", "CMhard", "CMhybrid", "CMhybrid_v2"]
C, D, K, B = 6, 8, 2, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_group(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert comm.init_distributed("cpu")


def memory_inputs(mode):
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(C * 4, D, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(C).repeat_interleave(4)
    cfg = get_cfg()
    cfg.MEMORY.MODE = mode
    cfg.DATALOADER.NUM_INSTANCES = K
    memory = build_memory(cfg, feats, labels, generator=torch.Generator().manual_seed(0))
    batches = []
    for r in range(2):  # rank r's local batch: identities 3r..3r+2 (no overlap), K each
        gr = torch.Generator().manual_seed(100 + r)
        targets = torch.arange(3 * r, 3 * r + 3).repeat_interleave(K)
        batches.append((F.normalize(torch.randn(len(targets), D, generator=gr, dtype=torch.float64), dim=1), targets))
    return memory, batches


def memory_worker(rank, world, port, out):
    join_group(rank, world, port)
    for mode in MODES:
        memory, batches = memory_inputs(mode)
        memory.update_in_backward = False
        feats, targets = batches[rank]
        x = feats.clone().requires_grad_()
        sum(memory(x, targets).values()).backward()
        memory.update(comm.all_gather_equal(feats), comm.all_gather_equal(targets))  # what the engine calls
        torch.save(memory.bank.clone(), os.path.join(out, f"{mode}_{rank}.pt"))
    uneven = torch.arange(3 + 2 * rank, dtype=torch.float64).unsqueeze(1) + 10 * rank  # 3 rows on rank 0, 5 on 1
    torch.save({"equal": comm.all_gather_equal(batches[rank][1]), "uneven": comm.all_gather_tensor(uneven)},
               os.path.join(out, f"gathered_{rank}.pt"))
    dist.destroy_process_group()


def train_worker(rank, world, port, root, out):
    join_group(rank, world, port)
    from hhcl_plugin.engine import build_engine, hooks
    from hhcl_plugin.tools.train import build_parser, setup

    if rank == 1:  # banks built from features rounded otherwise, as a GPU's unordered sums may give
        build = hooks.build_memory
        hooks.build_memory = lambda cfg, features, *args, **kwargs: build(cfg, features + 1e-4, *args, **kwargs)

    opts = tiny_opts(root, os.path.join(out, "run")) + ["SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS", "3",
                                                      "SOLVER.IMS_PER_BATCH", "8", "INPUT.TRANSFORMS", "[]"]
    with setup(build_parser().parse_args(["--config-file", f"{REPO}/configs/hhcl_synth.yml", *opts])) as run:
        engine = build_engine(run.cfg, run.device)
        engine.run()
    try:  # SyncBatchNorm has no CPU kernels: the engine must refuse at setup, not at the first step
        with setup(build_parser().parse_args(["--config-file", f"{REPO}/configs/hhcl_synth.yml", *opts, "OUTPUT_DIR",
                                              os.path.join(out, "sync_bn"), "MODEL.SYNC_BN", "True"])) as run:
            build_engine(run.cfg, run.device)
        sync_bn_error = ""
    except ConfigError as e:
        sync_bn_error = str(e)
    torch.save({"bank": engine.memory.bank.clone(), "labels": torch.as_tensor(engine.pseudo_labels),
                "model": engine.model.state_dict(), "sync_bn_error": sync_bn_error}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def spawn(fn, *args):
    mp.spawn(fn, args=(2, free_port(), *args), nprocs=2, join=True)


def test_memory_update_with_gathered_batches_equals_one_process_with_the_global_batch(tmp_path):
    spawn(memory_worker, str(tmp_path))
    for mode in MODES:
        memory, batches = memory_inputs(mode)
        feats = torch.cat([f for f, _ in batches]).requires_grad_()
        targets = torch.cat([t for _, t in batches])
        sum(memory(feats, targets).values()).backward()  # single process: update in backward
        banks = [torch.load(tmp_path / f"{mode}_{r}.pt") for r in range(2)]
        assert (banks[0] - banks[1]).abs().max() <= 1e-6, mode
        assert (banks[0] - memory.bank).abs().max() <= 1e-6, mode
        assert not torch.equal(banks[0], memory_inputs(mode)[0].bank), mode  # the banks did move
    _, batches = memory_inputs("CM")
    for r in range(2):
        gathered = torch.load(tmp_path / f"gathered_{r}.pt")
        assert torch.equal(gathered["equal"], torch.cat([t for _, t in batches]))  # rank order
        assert gathered["uneven"].squeeze(1).tolist() == [0, 1, 2, 10, 11, 12, 13, 14]


def test_two_process_training_keeps_ranks_identical(synth_root, tmp_path):
    spawn(train_worker, synth_root, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["labels"], r1["labels"]) and (r0["labels"] >= 0).any()
    assert torch.equal(r0["bank"], r1["bank"])  # rank 0's banks, then the same updates on every rank
    for key, value in r0["model"].items():
        assert torch.allclose(value.float(), r1["model"][key].float(), atol=1e-6), key
    assert os.path.isfile(tmp_path / "run" / "last.pth")  # written by rank 0
    assert "MODEL.SYNC_BN True needs GPU processes" in r0["sync_bn_error"] and r1["sync_bn_error"]
