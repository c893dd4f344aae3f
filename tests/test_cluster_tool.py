"""eps guidance: ``hhcl-cluster`` sweeps, ``CLUSTER.EPS auto``, the cluster grid figure."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from conftest import tiny_opts
from hhcl_plugin.clustering import build_clusterer
from hhcl_plugin.clustering.eps_rule import auto_eps
from hhcl_plugin.config import setup_cfg
from hhcl_plugin.data import build_data
from hhcl_plugin.deploy import Embedder
from hhcl_plugin.engine.cluster_grid import draw_cluster_grid
from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.tools.cluster import format_table, main, sweep
from hhcl_plugin.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"
PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys, *args):
    code = main(["--config-file", CONFIG, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.fixture(scope="module")
def tiny(synth_root, tmp_path_factory):
    """The tiny set's config, data and ImageNet-initialised features, computed once."""
    opts = tiny_opts(synth_root, str(tmp_path_factory.mktemp("out")))
    cfg = setup_cfg(CONFIG, opts)
    data = build_data(cfg)
    features = Embedder(cfg).embed([p for p, _, _ in data.train])
    return opts, cfg, data, features


@pytest.fixture(scope="module")
def swept(tiny, tmp_path_factory):
    opts = tiny[0]
    folder = tmp_path_factory.mktemp("sweep")
    args = ["--config-file", CONFIG, *opts, "--eps", "0.5", "0.6", "auto", "--output", str(folder / "rows.json"),
            "--figure", str(folder / "grid.png")]
    assert main(args) == 0
    return folder, json.load(open(folder / "rows.json"))


def test_sweep_rows_columns_and_ground_truth_scores(tiny, swept):
    _, cfg, data, features = tiny
    _, report = swept
    rows, n = report["rows"], len(data.train)
    assert report["images"] == n and [r["setting"] for r in rows] == [0.5, 0.6, "auto"]
    for row in rows:
        assert set(row) == {"setting", "eps", "clusters", "outlier_pct", "clustered", "median_size", "largest_size",
                            "nmi", "ari"}
        assert row["clustered"] + round(row["outlier_pct"] * n / 100) == n
        assert row["clusters"] <= row["clustered"] and row["median_size"] <= row["largest_size"] <= row["clustered"]
        assert 0 <= row["nmi"] <= 1 and -1 <= row["ari"] <= 1
    # each row is what a fresh clustering at that eps gives, scored with outliers as singletons
    gt = data.train_ground_truth
    for row in rows:
        cfg_e = setup_cfg(CONFIG, [*tiny[0], "CLUSTER.EPS", str(row["setting"])])
        labels = build_clusterer(cfg_e)(features).labels
        assert row["clusters"] == labels.max() + 1 and row["clustered"] == int((labels >= 0).sum())
        singles = np.where(labels >= 0, labels, labels.max() + 1 + np.arange(len(labels)))
        assert row["ari"] == pytest.approx(adjusted_rand_score(gt, singles))
    assert rows[0]["clusters"] != rows[1]["clusters"] or rows[0]["clustered"] != rows[1]["clustered"]


def test_sweep_prints_one_table_row_per_eps(tiny, capsys, tmp_path):
    code, out, _ = run(capsys, *tiny[0], "--eps", "0.55", "0.65")
    assert code == 0
    header = next(line for line in out.splitlines() if line.strip().startswith("eps "))
    assert header.split() == ["eps", "clusters", "outliers", "%", "clustered", "images", "median", "size",
                              "largest", "size", "NMI", "ARI"]
    body = out.split(header, 1)[1].splitlines()[2:4]
    assert [line.split()[0] for line in body] == ["0.55", "0.65"]


def test_sweep_without_identities_has_no_score_columns(tiny):
    _, cfg, _, features = tiny
    rows = sweep(build_clusterer(cfg), features, [0.6, "auto"], ground_truth=None)
    assert [set(r) - {"labels"} for r in rows] == [{"setting", "eps", "clusters", "outlier_pct", "clustered",
                                                     "median_size", "largest_size"}] * 2
    header = format_table(rows).splitlines()[0].split()
    assert header[-2:] == ["largest", "size"] and "ARI" not in header


def test_sweep_figures_one_per_eps(swept):
    folder, _ = swept
    names = sorted(os.listdir(folder))
    assert names == ["grid_auto.png", "grid_eps0.5.png", "grid_eps0.6.png", "rows.json"]
    for name in names[:-1]:
        assert open(folder / name, "rb").read(8) == PNG


def test_grid_draws_one_row_per_cluster_and_one_of_outliers(tmp_path, tiny):
    data = tiny[2]
    paths = [p for p, _, _ in data.train[:30]]
    labels = np.array([0] * 10 + [1] * 10 + [-1] * 10)
    small = draw_cluster_grid(paths, labels, str(tmp_path / "a.png"), clusters=2, members=4)
    tall = draw_cluster_grid(paths, np.array([0, 1, 2, 3] * 5 + [-1] * 10), str(tmp_path / "b.png"),
                             clusters=4, members=4)
    assert small == str(tmp_path / "a.png")
    # 3 rows (2 clusters + outliers) against 5 rows: the figure grows by rows, not by columns
    (w_small, h_small), (w_tall, h_tall) = Image.open(small).size, Image.open(tall).size
    assert w_small == w_tall and h_tall > h_small


def test_auto_eps_is_the_median_nearest_distance_and_deterministic():
    x, _ = make_clustered_features(300, 16, seed=3, mean_cluster_size=8, outlier_frac=0.1, near_dup_frac=0.0,
                                   exact_dup_frac=0.0)
    cfg = setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.EPS", "auto", "CLUSTER.K1", "10",
                         "CLUSTER.K2", "3"])
    clusterer = build_clusterer(cfg)
    first, second = clusterer(x), build_clusterer(cfg)(x)
    graph = clusterer.jaccard_graph(x)
    assert 0 < first.eps < 1 and first.eps == second.eps == float(np.median(graph.nearest.astype(np.float64)))
    assert np.array_equal(first.labels, second.labels) and first.num_clusters > 0
    fixed = build_clusterer(setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "CLUSTER.EPS", str(first.eps),
                                           "CLUSTER.K1", "10", "CLUSTER.K2", "3"]))(x)
    assert np.array_equal(fixed.labels, first.labels)


def test_auto_eps_stays_inside_the_open_interval():
    assert auto_eps(np.ones(10, np.float32)) == 0.95  # no image has a neighbour: not eps 1
    assert auto_eps(np.zeros(10, np.float32)) == 0.05  # all duplicates: not eps 0
    assert auto_eps(np.array([0.2, 0.4, 0.9], np.float32)) == pytest.approx(0.4)


def test_eps_auto_from_yaml_and_command_line_numbers_still_numbers(tmp_path):
    child = tmp_path / "auto.yml"
    child.write_text(f"_BASE_: {CONFIG}\nCLUSTER:\n  EPS: auto\n")
    assert setup_cfg(str(child)).CLUSTER.EPS == "auto"
    assert setup_cfg(str(child), ["CLUSTER.EPS", "0.55"]).CLUSTER.EPS == 0.55
    assert setup_cfg(CONFIG, ["CLUSTER.EPS", "auto"]).CLUSTER.EPS == "auto"
    assert setup_cfg(CONFIG).CLUSTER.EPS == 0.5
    for bad in ("1.5", "0", "autos", "True"):
        with pytest.raises(ConfigError, match=r"CLUSTER.EPS is .*, expected a number in \(0, 1\) or 'auto'"):
            setup_cfg("", ["CLUSTER.EPS", bad])


@pytest.mark.parametrize("args, message", [
    (["--eps", "0.5", "1.2"], "--eps is 1.2, expected a number in (0, 1) or 'auto'"),
    (["--eps", "half"], "--eps is 'half'"),
    (["--figure", "grid.jpg"], "ending in .png"),
    (["CLUSTER.NAME", "infomap"], "CLUSTER.NAME is infomap; add CLUSTER.NAME dbscan_jaccard"),
    (["CLUSTER.EPS", "2"], "CLUSTER.EPS is 2.0"),
])
def test_bad_input_is_one_line_before_any_work(args, message, capsys, tmp_path):
    root = tmp_path / "never_made"  # synthreid would generate its images here
    code, out, err = run(capsys, "DATASETS.ROOT", str(root), "DATASETS.SYNTH_PRESET", "tiny", *args)
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not root.exists()


def test_output_that_is_a_folder_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, "DATASETS.ROOT", str(tmp_path / "never_made"), "--output", str(tmp_path))
    assert code == 2 and "--output" in err and "is a folder" in err and not (tmp_path / "never_made").exists()


def test_grid_hook_writes_each_epochs_clustering_under_plots(tiny, tmp_path):
    from types import SimpleNamespace

    from hhcl_plugin.engine.cluster_grid_hook import ClusterGridHook

    data = tiny[2]
    labels = np.where(np.arange(len(data.train)) % 5 == 0, -1, np.arange(len(data.train)) % 7)
    class EngineView(SimpleNamespace):  # a hook holds its engine by weak reference: a class that allows one
        pass

    hook = ClusterGridHook()
    engine = EngineView(cfg=SimpleNamespace(OUTPUT_DIR=str(tmp_path), SEED=1), data=data,
                        pseudo_labels=labels, epoch_stats={"clusters": 7, "outlier_ratio": 0.2, "eps": 0.5})
    hook.engine = engine
    for engine.epoch in (0, 1):
        hook.before_epoch()
    names = sorted(os.listdir(tmp_path / "plots"))
    assert names == ["clusters_epoch001.png", "clusters_epoch002.png"]
    assert all(open(tmp_path / "plots" / n, "rb").read(8) == PNG for n in names)


def test_grid_hook_is_registered_only_without_query_and_gallery(tiny):
    import dataclasses

    from hhcl_plugin.engine import HHCLEngine
    from hhcl_plugin.modeling import build_model

    _, cfg, data, _ = tiny
    names = lambda d: [type(h).__name__ for h in HHCLEngine(d, build_model(cfg), use_gpu=False, cfg=cfg).hooks]  # noqa: E731
    assert "ClusterGridHook" not in names(data)
    assert names(dataclasses.replace(data, query=[], gallery=[]))[:2] == ["ClusteringHook", "ClusterGridHook"]


def test_training_with_eps_auto_records_each_epochs_eps(synth_root, tmp_path):
    from hhcl_plugin.tools.train import main as train

    out = str(tmp_path / "run")
    assert train(["--config-file", CONFIG, *tiny_opts(synth_root, out), "CLUSTER.EPS", "auto",
                  "SOLVER.MAX_EPOCH", "1"]) == 0
    epochs = json.load(open(os.path.join(out, "metrics.json")))["epochs"]
    assert len(epochs) == 1 and 0 < epochs[0]["eps"] < 1 and epochs[0]["clusters"] > 0
    assert f"eps={epochs[0]['eps']:.3f} by the auto rule" in open(os.path.join(out, "log.txt")).read()


def test_the_sweep_clusters_the_features_that_training_clusters(tiny):
    """hhcl-cluster and the clustering hook embed the training images through the same extractor and loader."""
    from hhcl_plugin.engine import ClusteringHook, HHCLEngine
    from hhcl_plugin.tools.cluster import training_features

    _, cfg, data, features = tiny
    embedder = Embedder(cfg)
    swept = training_features(cfg, data, embedder)
    engine = HHCLEngine(data, embedder.model, use_gpu=False, cfg=cfg)
    engine.epoch = 0
    hook = next(h for h in engine.hooks if isinstance(h, ClusteringHook))
    trained = hook.extract_features().numpy()
    assert swept.dtype == trained.dtype == np.float32 and swept.shape == (len(data.train), embedder.model.feat_dim)
    assert np.array_equal(swept, trained)
    assert np.array_equal(swept, features)  # paths with the Embedder's transform: the same features
    assert np.allclose(np.linalg.norm(swept, axis=1), 1.0, atol=1e-5)
