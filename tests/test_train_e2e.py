"""End to end: the launcher on the tiny synthetic set, resume, and user errors from the CLI."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import tiny_opts
from hhcl_plugin.engine.checkpoint import load_checkpoint
from hhcl_plugin.tools.train import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    assert main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", *tiny_opts(synth_root, out)]) == 0
    return out


def test_two_epoch_run_writes_metrics_and_checkpoints(trained):
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    for key in ("initial", "final"):
        assert set(metrics[key]) == {"mAP", "rank1", "rank5", "rank10"}
        assert all(0.0 <= v <= 100.0 for v in metrics[key].values())
    assert [e["epoch"] for e in metrics["evaluations"]] == [1, 2]
    assert metrics["evaluations"][-1]["clusters"] > 0
    assert 0.0 <= metrics["evaluations"][-1]["ari"] <= 1.0
    last = load_checkpoint(os.path.join(trained, "last.pth"))
    assert last["epoch"] == 2
    assert os.path.isfile(os.path.join(trained, "best.pth"))
    assert os.listdir(os.path.join(trained, "tensorboard"))
    log = open(os.path.join(trained, "log.txt")).read()
    assert "results on synthreid" in log
    speeds = re.findall(r"iter 2/2 .* ([0-9.]+) s/it \(data ([0-9.]+)\)  ([0-9]+) img/s", log)
    assert len(speeds) == 2  # one line per epoch (2 iterations each)
    for iter_s, data_s, images_per_s in speeds:
        assert 0 <= float(data_s) <= float(iter_s) and float(iter_s) > 0 and int(images_per_s) > 0
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2] and "loss" in metrics["epochs"][0]
    for name in ("loss.png", "retrieval.png", "clusters.png"):
        assert open(os.path.join(trained, "plots", name), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(os.listdir(os.path.join(trained, "ranked"))) == 8


def test_training_changes_the_model_and_checkpoint_reloads(trained, synth_root, tmp_path):
    from hhcl_plugin.config import setup_cfg
    from hhcl_plugin.engine import load_model_weights
    from hhcl_plugin.modeling import build_model

    cfg = setup_cfg(f"{REPO}/configs/hhcl_synth.yml", tiny_opts(synth_root, str(tmp_path)))
    fresh, reloaded = build_model(cfg), build_model(cfg)
    load_model_weights(reloaded, os.path.join(trained, "last.pth"))
    saved = load_checkpoint(os.path.join(trained, "last.pth"))["model"]
    assert all(torch.equal(v, saved[k]) for k, v in reloaded.state_dict().items())
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in reloaded.state_dict().items()
               if v.dtype.is_floating_point)


def test_resume_continues_from_last_checkpoint(trained, synth_root, tmp_path):
    import shutil

    out = str(tmp_path / "resumed")
    shutil.copytree(trained, out)
    opts = tiny_opts(synth_root, out) + ["SOLVER.MAX_EPOCH", "3"]
    assert main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", "--resume", *opts]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [e["epoch"] for e in metrics["evaluations"]] == [1, 2, 3]
    assert load_checkpoint(os.path.join(out, "last.pth"))["epoch"] == 3


def test_eval_only_reports_re_ranked_figures(trained, synth_root, tmp_path):
    out = str(tmp_path / "eval")
    opts = tiny_opts(synth_root, out) + ["MODEL.WEIGHTS", os.path.join(trained, "best.pth"), "TEST.RERANK", "True"]
    assert main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", "--eval-only", *opts]) == 0
    figures = re.search(r"evaluation on synthreid: (.*)", open(os.path.join(out, "eval", "1", "log.txt")).read()).group(1)
    assert "mAP_rerank" in figures and "rank1_rerank" in figures
    results = json.load(open(os.path.join(out, "eval", "1", "results.json")))
    assert {"mAP", "mAP_rerank"} <= set(results["evaluation"]) and results["weights"].endswith("best.pth")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hhcl_plugin.tools.train", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_missing_dataset_root_is_one_line_without_traceback(tmp_path):
    proc = run_cli("--config-file", "configs/hhcl_r50.yml", "DATASETS.ROOT", "/nonexistent",
                   "OUTPUT_DIR", str(tmp_path))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "market1501/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}" in lines[0]
    assert "/nonexistent does not exist" in lines[0]


def test_unknown_config_key_is_named_from_the_cli(tmp_path):
    proc = run_cli("--config-file", "configs/hhcl_r50.yml", "SOLVER.LR", "0.1", "OUTPUT_DIR", str(tmp_path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown config key 'SOLVER.LR'" in proc.stderr


def test_resume_without_checkpoint_is_an_error(synth_root, tmp_path):
    code = main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", "--resume", *tiny_opts(synth_root, str(tmp_path))])
    assert code == 2


@pytest.mark.parametrize("opts, message", [
    (["CLUSTER.EPS", "0.01", "CLUSTER.MIN_SAMPLES", "30"], "no clusters found with CLUSTER.EPS=0.01"),
    (["SOLVER.IMS_PER_BATCH", "400"], "needs P = 100"),
])
def test_clustering_failures_name_eps_and_distance_statistics(synth_root, tmp_path, opts, message, capsys):
    code = main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", *tiny_opts(synth_root, str(tmp_path)), *opts])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "nn_median" in err and "Traceback" not in err


def test_bf16_autocast_trains_with_float32_memory(synth_root, tmp_path):
    from hhcl_plugin.engine import build_engine
    from hhcl_plugin.tools.train import build_parser, setup

    opts = tiny_opts(synth_root, str(tmp_path)) + ["SOLVER.AMP", "bf16", "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS", "2"]
    with setup(build_parser().parse_args(["--config-file", f"{REPO}/configs/hhcl_synth.yml", *opts])) as run:
        engine = build_engine(run.cfg, run.device)
        before = {k: v.clone() for k, v in engine.model.state_dict().items()}
        engine.run()
    assert not os.path.exists(tmp_path / "run.lock")  # released when the block ends
    assert engine.memory.bank.dtype == torch.float32
    assert torch.isfinite(engine.memory.bank).all()
    assert any(not torch.equal(v, before[k]) for k, v in engine.model.state_dict().items() if v.is_floating_point())


def test_training_curves_take_loss_terms_from_every_epoch(tmp_path):
    """A run resumed with another MEMORY.MODE logs other loss terms after the resume."""
    from hhcl_plugin.engine.report import plot_training_curves

    epochs = [{"epoch": 1, "loss": 1.0, "loss_hard": 0.6, "loss_centroid": 0.4, "clusters": 5, "outlier_ratio": 0.1},
              {"epoch": 2, "loss": 0.9, "loss_centroid": 0.5, "loss_instance": 0.4, "clusters": 6, "outlier_ratio": 0.1}]
    written = plot_training_curves({"epochs": epochs}, str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["clusters.png", "loss.png"]
    assert all(os.path.getsize(p) > 0 for p in written)
