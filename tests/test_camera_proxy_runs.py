"""Camera proxies in whole runs: two DDP processes keep them identical; --resume restores them bit-identically."""
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist

from conftest import tiny_opts
from hhcl_plugin.engine.checkpoint import load_checkpoint
from hhcl_plugin.tools.train import main
from test_distributed import join_group, spawn
from test_resume import wait_for_epoch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"
CAMERA = ["LOSS.NAMES", "('memory', 'camera_proxy')"]


def ddp_worker(rank, world, port, root, out):
    join_group(rank, world, port)
    from hhcl_plugin.engine import build_engine, hooks
    from hhcl_plugin.tools.train import build_parser, setup

    if rank == 1:  # proxies built from features rounded otherwise, as a GPU's unordered sums may give
        cls = hooks.Clustering
        hooks.Clustering = lambda features, *args: cls(features + 1e-4, *args)
    opts = tiny_opts(root, os.path.join(out, "run")) + CAMERA + [
        "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS", "3", "SOLVER.IMS_PER_BATCH", "8", "INPUT.TRANSFORMS", "[]"]
    with setup(build_parser().parse_args(["--config-file", CONFIG, *opts])) as run:
        engine = build_engine(run.cfg, run.device)
        terms = engine.losses.terms["camera_proxy"]
        built = {}
        original = terms.on_clustering
        terms.on_clustering = lambda c: (original(c), built.update(p=terms.proxies.clone()))
        engine.run()
    torch.save({"proxies": terms.proxies.clone(), "built": built["p"], "model": engine.model.state_dict()},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_keep_the_proxies_identical(synth_root, tmp_path):
    spawn(ddp_worker, synth_root, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["proxies"], r1["proxies"])  # rank 0's proxies, then the same global-batch updates
    assert not torch.equal(r0["proxies"], r0["built"])  # the updates did move them
    for key, value in r0["model"].items():
        assert torch.allclose(value.float(), r1["model"][key].float(), atol=1e-6), key


def opts(root, out):
    return tiny_opts(root, out) + CAMERA + ["SOLVER.MAX_EPOCH", "3", "SOLVER.ITERS", "6", "DETERMINISTIC", "True"]


def test_resume_with_camera_proxies_is_bit_identical(synth_root, tmp_path):
    ref, out = str(tmp_path / "ref"), str(tmp_path / "killed")
    assert main(["--config-file", CONFIG, *opts(synth_root, ref)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-m", "hhcl_plugin.tools.train", "--config-file", CONFIG,
                             *opts(synth_root, out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_epoch(os.path.join(out, "last.pth"), 1, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert load_checkpoint(os.path.join(out, "last.pth"))["epoch"] < 3
    assert main(["--config-file", CONFIG, "--resume", *opts(synth_root, out)]) == 0
    a, b = (load_checkpoint(os.path.join(d, "last.pth")) for d in (ref, out))
    assert a["epoch"] == b["epoch"] == 3
    assert set(a["losses"]) == {"terms.camera_proxy." + n for n in
                                ("proxies", "proxy_cluster", "proxy_camera", "camera_ids", "lookup")}
    for key, value in a["losses"].items():
        assert torch.equal(value, b["losses"][key]), key
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["memory"]["bank"], b["memory"]["bank"])
    assert a["metrics"] == b["metrics"] and "loss_cam_inter" in a["metrics"]["epochs"][-1]
