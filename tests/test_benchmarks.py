"""The benchmark scripts still run (they are what GPU sessions and the README figures use)."""
import os
import runpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_throughput_prints_a_row_per_batch_and_precision(capsys):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "train_throughput.py"))
    config = os.path.join(ROOT, "configs", "hhcl_r50.yml")
    assert script["main"](["--config-file", config, "--batches", "4", "8", "--precisions", "fp32", "bf16",
                           "--clusters", "20", "--iters", "1", "--warmup", "0", "MODEL.BACKBONE.NAME", "resnet18",
                           "INPUT.SIZE_TRAIN", "[64, 32]", "MODEL.DEVICE", "cpu", "MODEL.BN_SPLIT", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines[3:]]
    assert [(r[0], r[1]) for r in rows] == [("4", "fp32"), ("4", "bf16"), ("8", "fp32"), ("8", "bf16")]
    for row in rows:
        assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0  # images/s, step ms with both losses
        assert float(row[5]) > 0 and 0 <= float(row[6].rstrip("%")) < 100  # memory alone: ms, share (0.0% on a loaded CPU)
        assert float(row[7].rstrip("%")) < 100  # step less the stand-in step (timing noise can make it negative)


def test_train_step_prints_a_row_per_memory_mode(capsys):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "train_step.py"))
    assert script["main"](["--batch", "8", "--clusters", "6", "--dim", "16", "--instances", "2", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines[3:]]
    assert [r[0] for r in rows] == ["CM", "CMhard", "CMhybrid", "CMhybrid_v2"]
    for row in rows:
        times = [float(row[i]) for i in (1, 2, 4, 6, 7, 9, 10)]
        ratios = [float(row[i].rstrip("x")) for i in (3, 5, 8, 11)]
        assert all(t > 0 for t in times) and all(r >= 0 for r in ratios)  # tiny sizes: the loop may win
        assert int(row[12]) > 0  # operations of one update in the GPU's layout


def test_data_loading_prints_a_row_per_worker_count(synth_root, capsys):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "data_loading.py"))
    assert script["main"](["DATASETS.ROOT", synth_root, "DATASETS.SYNTH_PRESET", "tiny", "INPUT.SIZE_TRAIN", "[64, 32]",
                           "SOLVER.IMS_PER_BATCH", "16", "--workers", "0", "1", "--batches", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines[3:]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)  # images/s, per worker


def test_data_loading_names_a_missing_dataset_in_one_line(tmp_path, capsys):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "data_loading.py"))
    assert script["main"](["DATASETS.NAMES", "('market1501',)", "DATASETS.ROOT", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("data_loading.py: error:") and "market1501" in err[0]


def test_clustering_benchmark_prints_each_size_with_the_approximate_search(capsys, tmp_path):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "clustering.py"))
    out_json = tmp_path / "rows.json"
    assert script["main"](["--sizes", "700", "900", "--dim", "64", "--approx", "--no-products", "--reference-max", "0",
                           "--recall-rows", "50", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert text.count("recall@k1") == 2  # one recall table per size, printed as each size is done
    import json

    rows = {(r["n"], r["impl"]): r for r in json.loads(out_json.read_text())}
    assert set(rows) == {(700, "sparse"), (700, "ivf"), (900, "sparse"), (900, "ivf")}
    for n in (700, 900):
        assert 0.5 < rows[(n, "ivf")]["recall"] <= 1.0
        assert -1.0 <= rows[(n, "ivf")]["ari_vs_exact"] <= 1.0
        assert "recall" not in rows[(n, "sparse")]
