"""The example project adds a memory mode, a config key and a hook without editing the plugin."""
import json
import os
import sys

import torch

from conftest import tiny_opts
from hhcl_plugin.config import get_cfg
from hhcl_plugin.engine.checkpoint import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = os.path.join(REPO, "projects", "hard_mining_example")
sys.path.insert(0, PROJECT)

import train_net  # noqa: E402


def test_the_project_trains_with_its_memory_mode_config_key_and_hook(synth_root, tmp_path):
    import hard_mining

    seen = []
    losses = hard_mining.CMhardTopK.losses

    def recording(self, logits, targets):
        seen.append((self.num_negatives, logits.shape[1]))
        return losses(self, logits, targets)

    hard_mining.CMhardTopK.losses = recording
    try:
        out = str(tmp_path / "run")
        code = train_net.main(["--config-file", os.path.join(PROJECT, "configs", "hard_mining.yml"),
                               *tiny_opts(synth_root, out), "SOLVER.MAX_EPOCH", "1", "HARD_MINING.NUM_NEGATIVES", "3"])
    finally:
        hard_mining.CMhardTopK.losses = losses
    assert code == 0
    assert seen and all(k == 3 for k, _ in seen)  # the memory mode ran with the project's key
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert ckpt["memory"]["mode"] == "CMhardTopK"
    assert "loss_hard_topk" in json.load(open(os.path.join(out, "metrics.json")))["epochs"][0]
    sizes = json.load(open(os.path.join(out, "cluster_sizes.json")))  # the hook ran
    labels = ckpt["pseudo_labels"]
    assert sizes[0]["epoch"] == 1 and sum(sizes[0]["sizes"]) == int((labels >= 0).sum())
    assert "HARD_MINING" not in get_cfg()  # the plugin's defaults are unchanged


def test_hard_negatives_loss_keeps_the_own_cluster_and_the_k_most_similar_others():
    import hard_mining

    memory = hard_mining.CMhardTopK(4, 2, num_negatives=1)
    logits = torch.tensor([[1.0, 5.0, 2.0, 0.0]])
    loss = memory.losses(logits, torch.tensor([0]))["loss_hard_topk"]
    reference = -torch.log(torch.exp(torch.tensor(1.0)) / (torch.exp(torch.tensor(1.0)) + torch.exp(torch.tensor(5.0))))
    assert torch.allclose(loss, reference)


def test_the_project_hook_keeps_its_state_across_a_resume(synth_root, tmp_path):
    import hard_mining
    from hhcl_plugin.config import setup_cfg
    from hhcl_plugin.data import build_data
    from hhcl_plugin.modeling import build_model

    out = str(tmp_path / "run")
    args = ["--config-file", os.path.join(PROJECT, "configs", "hard_mining.yml"), *tiny_opts(synth_root, out),
            "SOLVER.MAX_EPOCH", "1"]
    assert train_net.main(args) == 0
    first = json.load(open(os.path.join(out, "cluster_sizes.json")))
    assert [e["epoch"] for e in first] == [1]
    assert load_checkpoint(os.path.join(out, "last.pth"))["hooks"]["ClusterSizeHook"] == {"sizes": first}

    cfg = get_cfg()
    train_net.add_hard_mining_config(cfg)
    cfg = setup_cfg(args[1], args[2:], cfg)
    engine = hard_mining.HardMiningEngine(build_data(cfg), build_model(cfg), use_gpu=False, cfg=cfg)
    hook = next(h for h in engine.hooks if isinstance(h, hard_mining.ClusterSizeHook))
    engine.resume(os.path.join(out, "last.pth"))
    assert hook.sizes == first  # handed back by the resume
    engine.run(max_epoch=2)
    sizes = json.load(open(os.path.join(out, "cluster_sizes.json")))
    assert [e["epoch"] for e in sizes] == [1, 2] and sizes[0] == first[0]  # the resumed run lists every epoch


def test_the_project_key_has_its_value_rule(synth_root, tmp_path, capsys):
    code = train_net.main(["--config-file", os.path.join(PROJECT, "configs", "hard_mining.yml"),
                           *tiny_opts(synth_root, str(tmp_path / "run")), "HARD_MINING.NUM_NEGATIVES", "0"])
    assert code == 2
    assert "HARD_MINING.NUM_NEGATIVES is 0, expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
