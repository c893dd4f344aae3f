"""The benchmark scripts still run (they are what GPU sessions and the README figures use)."""
import os
import runpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_throughput_prints_a_row_per_batch_and_precision(capsys):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "train_throughput.py"))
    config = os.path.join(ROOT, "configs", "hhcl_r50.yml")
    assert script["main"](["--config-file", config, "--batches", "4", "8", "--precisions", "fp32", "bf16",
                           "--clusters", "20", "--iters", "1", "--warmup", "0", "MODEL.BACKBONE.NAME", "resnet18",
                           "INPUT.SIZE_TRAIN", "[64, 32]", "MODEL.DEVICE", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines[3:]]
    assert [(r[0], r[1]) for r in rows] == [("4", "fp32"), ("4", "bf16"), ("8", "fp32"), ("8", "bf16")]
    for row in rows:
        assert float(row[2]) > 0  # images/s
        assert 0 < float(row[5].rstrip("%")) < 100  # memory share of the step
