"""hhcl-gallery: build / add / prune / search / group, atomic changes, model identity, bad input."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from conftest import tiny_opts
from hhcl_plugin.testing.synthetic_features import make_clustered_features
from hhcl_plugin.clustering.jaccard import compute_jaccard_distance_dense
from hhcl_plugin.config import get_cfg, setup_cfg
from hhcl_plugin.deploy.embedder import Embedder
from hhcl_plugin.engine.checkpoint import save_checkpoint
from hhcl_plugin.gallery import Change, Gallery, ImageRecord
from hhcl_plugin.gallery import index as gindex
from hhcl_plugin.gallery.grouping import group_images
from hhcl_plugin.gallery.search import RerankSettings, rerank_distances
from hhcl_plugin.gallery.store import MAX_SEGMENTS
from hhcl_plugin.tools.gallery import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"{REPO}/configs/hhcl_synth.yml"
CAMERA = ["DATASETS.FOLDER.CAMERA", r"_c(\d)"]


# ---------------------------------------------------------------------------- helpers
def feature_identity():
    """The identity of features given directly: the default config, no weights file."""
    from hhcl_plugin.gallery.model_identity import model_identity

    return model_identity(get_cfg())


def records(labels, cameras=None, first=0):
    cams = cameras if cameras is not None else ["0"] * len(labels)
    return [ImageRecord(-1, f"/g/{lab}/{i}.jpg", f"{lab}/{i}.jpg", str(c), 1, 0.0, f"{i:x}", 0.0, 0)
            for i, (lab, c) in zip(range(first, first + len(labels)), zip(labels, cams))]


def feature_gallery(folder, n=600, dim=64, kind="auto", seed=0):
    feats, labels = make_clustered_features(n, dim, seed=seed, outlier_frac=0.0, spread=(0.3, 0.4))
    g = Gallery.create(str(folder), feature_identity(), dim, kind)
    g.commit(Change(new=records(labels), vectors=feats))
    return g, feats, labels


class CountingEmbed:
    """Counts the images the embedder is asked for (the real embedder still runs)."""

    def __init__(self, monkeypatch):
        self.images = []
        original = Embedder.embed

        def embed(embedder, images, *args, **kwargs):
            self.images.extend(images)
            return original(embedder, images, *args, **kwargs)

        monkeypatch.setattr(Embedder, "embed", embed)


def copy_as_identity_folders(src, dst):
    """``dst/<identity>/<file>`` from a Market-style folder (identity = the name's first part)."""
    for path in sorted(glob.glob(os.path.join(src, "*.jpg"))):
        name = os.path.basename(path)
        os.makedirs(os.path.join(dst, name.split("_")[0]), exist_ok=True)
        shutil.copy2(path, os.path.join(dst, name.split("_")[0], name))
    return str(dst)


@pytest.fixture(scope="module")
def crops(synth_root, tmp_path_factory):
    """The tiny set's test gallery and query, as the folders of crops a user would have."""
    root = glob.glob(os.path.join(synth_root, "synthreid_tiny_*"))[0]
    base = tmp_path_factory.mktemp("crops")
    return {"gallery": copy_as_identity_folders(os.path.join(root, "bounding_box_test"), base / "gallery"),
            "query": copy_as_identity_folders(os.path.join(root, "query"), base / "query")}


@pytest.fixture(scope="module")
def weights(synth_root, tmp_path_factory):
    """Two checkpoints of the tiny config: ``a`` and another model ``b``."""
    cfg = setup_cfg(CONFIG, tiny_opts(synth_root, str(tmp_path_factory.mktemp("w"))))
    model = Embedder(cfg).model
    out = {}
    for name, scale in (("a", 0.5), ("b", 2.0)):
        with torch.no_grad():
            model.head.neck.weight.mul_(torch.linspace(scale, 1.0, model.feat_dim))
        out[name] = str(tmp_path_factory.mktemp("ckpt") / f"{name}.pth")
        save_checkpoint({"model": model.state_dict()}, out[name])
    return out


def model_opts(synth_root, tmp_path, weights):
    return tiny_opts(synth_root, str(tmp_path)) + ["MODEL.WEIGHTS", weights] + CAMERA


@pytest.fixture(scope="module")
def built(crops, synth_root, weights, tmp_path_factory):
    """A gallery built from the tiny gallery crops with checkpoint ``a``; tests copy it before changing it."""
    folder = str(tmp_path_factory.mktemp("built") / "g")
    out = str(tmp_path_factory.mktemp("out"))
    assert main(["build", "--config-file", CONFIG, *model_opts(synth_root, out, weights["a"]),
                 "--input", crops["gallery"], "--gallery", folder]) == 0
    return folder


def copy_gallery(built, tmp_path):
    dst = str(tmp_path / "g")
    shutil.copytree(built, dst)
    return dst


# ---------------------------------------------------------------------------- build and search
def test_search_finds_each_querys_own_identity_first(tmp_path):
    g, feats, labels = feature_gallery(tmp_path / "g")
    queries, q_labels = make_clustered_features(600, 64, seed=0, outlier_frac=0.0, spread=(0.3, 0.4))
    rng = np.random.default_rng(1)
    pick = rng.choice(len(queries), 40, replace=False)
    noisy = queries[pick] + 0.02 * rng.standard_normal((40, 64)).astype(np.float32)
    with Gallery.open(str(tmp_path / "g")) as reopened:  # what was committed, read back from disk
        results = reopened.search(noisy, k=5)
    assert [m[0].identity for m in results] == [str(q_labels[i]) for i in pick]
    assert all(m[0].similarity >= m[1].similarity for m in results)
    g.close()


def test_cli_build_then_search_uses_the_gallerys_own_model(built, crops, tmp_path, capsys):
    with Gallery.open(built) as g:
        assert len(g) == len(glob.glob(os.path.join(crops["gallery"], "*", "*.jpg")))
        assert g.settings.kind == "flat" and g.identity["sha256"]
        stored = g.vectors()[:3].copy()
        paths = [r.path for r in g.meta.records()[:3]]
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    out = str(tmp_path / "r.csv")
    query = glob.glob(os.path.join(crops["gallery"], "*", "*.jpg"))[0]  # a gallery image finds itself first
    assert main(["search", "--gallery", built, "--query", query, "--top-k", "3", "--output", out,
                 "MODEL.DEVICE", "cpu"]) == 0
    lines = open(out).read().splitlines()
    assert lines[0].startswith("query,rank,path,similarity,camera") and len(lines) == 4
    assert lines[1].split(",")[2] == os.path.abspath(query) and float(lines[1].split(",")[3]) > 0.999
    with Gallery.open(built) as g:  # the API embeds with the stored model too: same vectors as build
        again = g.search(paths, k=1)
    assert [m[0].path for m in again] == paths


def test_search_output_json_and_figure(built, crops, tmp_path):
    out, fig = str(tmp_path / "r.json"), str(tmp_path / "ranked.png")
    assert main(["search", "--gallery", built, "--query", crops["query"], "--top-k", "4", "--output", out,
                 "--figure", fig]) == 0
    import json

    rows = json.load(open(out))
    n_queries = len(glob.glob(os.path.join(crops["query"], "*", "*.jpg")))
    assert len(rows) == 4 * n_queries and {r["rank"] for r in rows} == {1, 2, 3, 4}
    assert os.path.getsize(fig) > 1000


# ---------------------------------------------------------------------------- add, change, prune
def test_add_embeds_only_new_files_and_a_changed_file_again(built, crops, tmp_path, monkeypatch):
    g = copy_gallery(built, tmp_path)
    counter = CountingEmbed(monkeypatch)
    assert main(["add", "--gallery", g, "--input", crops["gallery"]]) == 0
    assert counter.images == []  # everything already in the gallery: nothing embedded
    day2 = tmp_path / "day2"
    shutil.copytree(crops["query"], day2)
    assert main(["add", "--gallery", g, "--input", str(day2)]) == 0
    n_new = len(glob.glob(os.path.join(day2, "*", "*.jpg")))
    assert len(counter.images) == n_new
    counter.images.clear()
    changed = sorted(glob.glob(os.path.join(day2, "*", "*.jpg")))[0]
    other = sorted(glob.glob(os.path.join(crops["gallery"], "*", "*.jpg")))[0]
    shutil.copyfile(other, changed)  # new content under the same path
    touched = sorted(glob.glob(os.path.join(day2, "*", "*.jpg")))[1]
    os.utime(touched, (1e9, 1e9))  # same content, new time: not embedded again
    assert main(["add", "--gallery", g, "--input", str(day2)]) == 0
    assert counter.images == []  # its new content is another gallery image's: that vector is copied
    with Gallery.open(g) as gal:
        rec = gal.meta.by_path([changed])[changed]
        src = gal.meta.by_path([other])[other]
        np.testing.assert_allclose(gal.vectors()[rec.row], gal.vectors()[src.row], atol=1e-5)  # its new content
        assert gal.meta.by_path([touched])[touched].mtime == 1e9
        assert len(gal) == len(glob.glob(os.path.join(crops["gallery"], "*", "*.jpg"))) + n_new
        assert gal.num_rows == len(gal) + 1  # the changed file's old vector is dead


def test_a_changed_file_is_embedded_again(built, crops, tmp_path, monkeypatch):
    g = copy_gallery(built, tmp_path)
    src = tmp_path / "src"
    shutil.copytree(crops["query"], src)
    assert main(["add", "--gallery", g, "--input", str(src)]) == 0
    target = sorted(glob.glob(os.path.join(src, "*", "*.jpg")))[0]
    from PIL import Image

    Image.open(target).transpose(Image.FLIP_LEFT_RIGHT).rotate(10).save(target)  # content no other file has
    counter = CountingEmbed(monkeypatch)
    assert main(["add", "--gallery", g, "--input", str(src)]) == 0
    assert counter.images == [target]
    with Gallery.open(g) as gal:
        res = gal.search([target], k=1)[0][0]
        assert res.path == target and res.similarity > 0.999  # the new vector, not the old one


def test_prune_drops_vanished_files_from_search(built, crops, tmp_path):
    g = copy_gallery(built, tmp_path)
    src = tmp_path / "src"
    shutil.copytree(crops["query"], src)
    assert main(["add", "--gallery", g, "--input", str(src)]) == 0
    gone = sorted(glob.glob(os.path.join(src, "*", "*.jpg")))[:3]
    with Gallery.open(g) as gal:
        vecs = gal.vectors()[[gal.meta.by_path([p])[p].row for p in gone]].copy()
        before = len(gal)
    for p in gone:
        os.remove(p)
    assert main(["prune", "--gallery", g]) == 0
    with Gallery.open(g) as gal:
        assert len(gal) == before - 3
        hits = {m.path for res in gal.search(vecs, k=10) for m in res}
    assert not hits & set(gone)


# ---------------------------------------------------------------------------- atomicity and locking
KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from hhcl_plugin.gallery import Change, Gallery, ImageRecord, metadata, store
    folder, point = sys.argv[1], sys.argv[2]
    feats = np.load(os.path.join(folder, "..", "new.npy"))
    recs = [ImageRecord(-1, f"/new/{i}.jpg", f"new/{i}.jpg", "0", 1, 0.0, f"new{i}", 0.0, 0) for i in range(len(feats))]
    g = Gallery.open(folder, writable=True)
    def killed_after(f):
        def call(*a, **k):
            f(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        return call
    target = {"vectors": (store.Gallery, "_append_vectors"), "index": (store, "_write_index"),
              "transaction": (metadata.Metadata, "insert"), "commit": (store.Gallery, "_remove_leftovers")}[point]
    setattr(target[0], target[1], killed_after(getattr(target[0], target[1])))
    g.commit(Change(new=recs, vectors=feats))
""")



@pytest.mark.parametrize("point", ["vectors", "index", "transaction", "commit", "rebuild"])
def test_sigkill_during_add_leaves_the_gallery_before_or_complete(tmp_path, point):
    g, feats, labels = feature_gallery(tmp_path / "g", n=300, kind="flat" if point != "rebuild" else "auto")
    if point == "rebuild":
        for i in range(MAX_SEGMENTS - 1):  # the next add rebuilds one index over all rows
            extra, _ = make_clustered_features(5, 64, seed=10 + i)
            g.commit(Change(new=records(np.arange(5), first=1000 + 10 * i), vectors=extra))
    queries = feats[:20]
    before_n, before = len(g), g.search(queries, k=5)
    g.close()
    new, _ = make_clustered_features(50, 64, seed=3)
    np.save(tmp_path / "new.npy", new)
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    where = "index" if point == "rebuild" else point
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "g"), where], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with Gallery.open(str(tmp_path / "g")) as after:
        n = len(after)
        assert n in (before_n, before_n + 50)
        if point == "commit":
            assert n == before_n + 50  # killed after the commit: complete
        elif point != "transaction":
            assert n == before_n  # killed before the commit: as before
        if n == before_n:
            assert [[m.path for m in r] for r in after.search(queries, k=5)] == [[m.path for m in r] for r in before]
        else:
            assert {m.path for r in after.search(new[:5], k=1) for m in r} == {f"/new/{i}.jpg" for i in range(5)}
    with Gallery.open(str(tmp_path / "g"), writable=True) as writer:  # the next writer cleans up and goes on
        kept = {s.file for s in writer.meta.segments()} | {writer.meta.get("template")}
        assert {os.path.basename(p) for p in glob.glob(str(tmp_path / "g" / "*.faiss"))} <= kept
        assert not glob.glob(str(tmp_path / "g" / ".tmp-*"))
        assert os.path.getsize(tmp_path / "g" / "vectors.f32") == writer.num_rows * 64 * 4
        if len(writer) == before_n:
            writer.commit(Change(new=[ImageRecord(-1, f"/new/{i}.jpg", f"new/{i}.jpg", "0", 1, 0.0, f"new{i}", 0.0, 0)
                                      for i in range(50)], vectors=new))
        assert len(writer) == before_n + 50
        assert [m[0].path for m in writer.search(new[:5], k=1)] == [f"/new/{i}.jpg" for i in range(5)]


def test_sigkill_of_the_cli_during_embedding_leaves_the_gallery_as_before(built, crops, tmp_path):
    g = copy_gallery(built, tmp_path)
    with Gallery.open(g) as gal:
        before = len(gal)
    proc = subprocess.Popen([sys.executable, "-m", "hhcl_plugin.tools.gallery", "add", "--gallery", g,
                             "--input", crops["query"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)
    for line in proc.stdout:  # killed once it has planned the addition and starts embedding
        if "to embed" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Gallery.open(g) as gal:
        assert len(gal) == before and gal.generation == 1


def test_a_second_writer_is_refused(built, crops, tmp_path, capsys):
    g = copy_gallery(built, tmp_path)
    with Gallery.open(g, writable=True):
        assert main(["add", "--gallery", g, "--input", crops["query"]]) == 2
        assert main(["prune", "--gallery", g]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "is in use by another writer" in err[0]
    assert main(["prune", "--gallery", g]) == 0  # released


def test_another_models_weights_are_refused_in_one_line(built, crops, synth_root, weights, tmp_path, capsys,
                                                        monkeypatch):
    counter = CountingEmbed(monkeypatch)
    other = model_opts(synth_root, str(tmp_path), weights["b"])
    assert main(["add", "--gallery", built, "--input", crops["query"], "--config-file", CONFIG, *other]) == 2
    assert main(["search", "--gallery", built, "--query", crops["query"], "MODEL.WEIGHTS", weights["b"]]) == 2
    assert main(["search", "--gallery", built, "--query", crops["query"], "MODEL.EMBEDDING_DIM", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("hhcl-gallery: error: gallery ") for line in err)
    assert "weights" in err[0] and "another model" in err[0] and "MODEL.EMBEDDING_DIM" in err[2]
    assert counter.images == []
    # the gallery's own weights given explicitly are accepted
    same = model_opts(synth_root, str(tmp_path), weights["a"])
    assert main(["search", "--gallery", built, "--query", crops["query"], "--top-k", "1", "--config-file", CONFIG,
                 *same]) == 0


# ---------------------------------------------------------------------------- search options
def test_exclude_same_camera(built, crops, tmp_path):
    out = str(tmp_path / "r.csv")
    assert main(["search", "--gallery", built, "--query", crops["query"], "--top-k", "10", "--exclude-same-camera",
                 "--output", out]) == 0
    import csv
    import re

    rows = list(csv.DictReader(open(out)))
    assert rows
    for row in rows:
        assert row["camera"] != re.search(r"_c(\d)", os.path.basename(row["query"])).group(1)
    assert main(["search", "--gallery", built, "--query", crops["query"], "--output", out]) == 0
    plain = list(csv.DictReader(open(out)))
    assert any(row["camera"] == re.search(r"_c(\d)", os.path.basename(row["query"])).group(1) for row in plain)


def test_rerank_orders_by_the_jaccard_distance(tmp_path):
    g, feats, labels = feature_gallery(tmp_path / "g", n=400)
    queries = feats[:30] + 0.05 * np.random.default_rng(0).standard_normal((30, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    plain = g.search(queries, k=10)
    reranked = g.search(queries, k=10, rerank=True)  # TEST.RERANK_* of the stored config
    cfg = get_cfg()
    settings = RerankSettings(cfg.TEST.RERANK_K1, cfg.TEST.RERANK_K2, cfg.TEST.RERANK_LAMBDA)
    changed = 0
    for q, (p, r) in enumerate(zip(plain, reranked)):
        cand = g.search(queries[q], k=100)[0]  # the candidates re-ranked
        vecs = g.vectors()[[int(m.path.split("/")[-1][:-4]) for m in cand]]
        both = np.vstack([queries[q:q + 1], vecs])
        jac = compute_jaccard_distance_dense(both, min(settings.k1, len(both)), settings.k2)[0, 1:]
        expected = (1 - settings.lambda_value) * jac + settings.lambda_value * (1 - vecs @ queries[q]) / 2
        np.testing.assert_allclose(rerank_distances(queries[q], vecs, settings), expected, atol=1e-5)
        order = [cand[i].path for i in np.argsort(expected, kind="stable")[:10]]
        assert [m.path for m in r] == order
        assert all(a.distance <= b.distance for a, b in zip(r, r[1:]))
        changed += [m.path for m in r] != [m.path for m in p]
    assert changed > 0
    g.close()


# ---------------------------------------------------------------------------- group
def test_group_recovers_the_identities(tmp_path):
    feats, labels = make_clustered_features(800, 64, seed=2, outlier_frac=0.0, spread=(0.3, 0.4), group_weight=0.3)
    g = Gallery.create(str(tmp_path / "g"), feature_identity(), 64)
    g.commit(Change(new=records(labels), vectors=feats))
    g.close()
    out, folders = str(tmp_path / "people.csv"), str(tmp_path / "people")
    assert main(["group", "--gallery", str(tmp_path / "g"), "--eps", "0.5", "--output", out, "--folders", folders]) == 0
    import csv

    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 800
    found = np.array([int(r["identity"]) for r in rows])
    truth = np.array([int(r["path"].split("/")[2]) for r in rows])
    assert adjusted_rand_score(truth, found) > 0.8
    people = [d for d in os.listdir(folders) if d.startswith("person_")]
    assert len(people) == found.max() + 1
    first = sorted(os.listdir(os.path.join(folders, people[0])))
    assert all(os.path.islink(os.path.join(folders, people[0], f)) for f in first)


def test_group_since_takes_only_later_images(tmp_path):
    g, feats, labels = feature_gallery(tmp_path / "g", n=300)
    later, later_labels = make_clustered_features(300, 64, seed=5, outlier_frac=0.0, spread=(0.3, 0.4),
                                                  group_weight=0.3)
    import time

    cut = time.time()
    time.sleep(0.01)
    g.commit(Change(new=records(later_labels, first=5000), vectors=later))
    cfg = setup_cfg("", ["CLUSTER.EPS", "0.5"])
    recs, found = group_images(g, cfg, since=cut)
    assert len(recs) == 300 and all(r.path.startswith("/g/") and int(r.path.split("/")[-1][:-4]) >= 5000 for r in recs)
    assert adjusted_rand_score(later_labels, found) > 0.8
    g.close()


# ---------------------------------------------------------------------------- index kinds
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_kinds_reach_the_recall_they_report(tmp_path, kind):
    both, _ = make_clustered_features(3200, 32, seed=4, outlier_frac=0.1)
    feats, held_out = both[:3000], both[3000:]  # queries of the same distribution, not in the gallery
    g = Gallery.create(str(tmp_path / "g"), feature_identity(), 32, kind)
    g.commit(Change(new=records(np.zeros(3000, int)), vectors=feats))
    s = g.settings
    assert s.kind == kind
    _, truth = gindex.exact_topk(feats, held_out, 10)
    _, rows = g.search_vectors(held_out, 10)
    recall = gindex.recall_at(rows, truth)
    if kind == "flat":
        assert s.recall_at_10 is None and recall >= 0.995  # exact up to ties of duplicates in float rounding
    else:
        assert s.recall_at_10 >= gindex.RECALL_TARGET and s.search_knob in gindex.index_kind(kind).knobs
        assert recall >= 0.9
    g.close()


def test_auto_switches_to_the_approximate_index_above_the_crossover(tmp_path, monkeypatch):
    monkeypatch.setattr(gindex, "FLAT_MAX_VALUES", 500 * 64)
    g, feats, _ = feature_gallery(tmp_path / "g", n=400)
    assert g.settings.kind == "flat"
    more, more_labels = make_clustered_features(400, 64, seed=9, outlier_frac=0.0, spread=(0.3, 0.4))
    g.commit(Change(new=records(more_labels, first=400), vectors=more))
    assert g.settings.kind == "ivf" and len(g.meta.segments()) == 1 and g.settings.recall_at_10 >= 0.95
    found = g.search(more[:5], k=1)  # each finds itself (or an exact duplicate of itself)
    assert [m[0].identity for m in found] == [str(x) for x in more_labels[:5]]
    assert all(m[0].similarity > 0.999 for m in found)
    g.close()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", ["missing_gallery", "empty_query", "unreadable", "k0", "csv_ext", "no_cameras",
                                  "build_exists", "add_missing_input", "since", "eps"])
def test_bad_input_is_one_line_exit_2_before_embedding(case, built, crops, tmp_path, capsys, monkeypatch):
    counter = CountingEmbed(monkeypatch)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    shutil.copytree(crops["query"], bad)
    open(sorted(glob.glob(os.path.join(bad, "*", "*.jpg")))[-1], "wb").write(b"not an image")
    argv = {
        "missing_gallery": ["search", "--gallery", str(tmp_path / "nope"), "--query", crops["query"]],
        "empty_query": ["search", "--gallery", built, "--query", str(empty)],
        "unreadable": ["search", "--gallery", built, "--query", str(bad)],
        "k0": ["search", "--gallery", built, "--query", crops["query"], "--top-k", "0"],
        "csv_ext": ["search", "--gallery", built, "--query", crops["query"], "--output", str(tmp_path / "r.txt")],
        "no_cameras": ["search", "--gallery", built, "--query", crops["query"], "--exclude-same-camera",
                       "DATASETS.FOLDER.CAMERA", "none"],
        "build_exists": ["build", "--config-file", CONFIG, "--input", crops["query"], "--gallery", built],
        "add_missing_input": ["add", "--gallery", built, "--input", str(tmp_path / "nope")],
        "since": ["group", "--gallery", built, "--since", "yesterday", "--output", str(tmp_path / "p.csv")],
        "eps": ["group", "--gallery", built, "--eps", "2", "--output", str(tmp_path / "p.csv")],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hhcl-gallery: error: "), err
    assert counter.images == []


def test_unreadable_image_in_add_is_refused_before_embedding(built, crops, tmp_path, capsys, monkeypatch):
    g = copy_gallery(built, tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(crops["query"], bad)
    broken = sorted(glob.glob(os.path.join(bad, "*", "*.jpg")))[-1]
    open(broken, "wb").write(b"\xff\xd8 truncated")
    counter = CountingEmbed(monkeypatch)
    assert main(["add", "--gallery", g, "--input", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and broken in err[0] and counter.images == []


def test_the_benchmark_prints_a_row_per_index_kind(tmp_path, capsys):
    import json
    import runpy

    script = runpy.run_path(os.path.join(REPO, "benchmarks", "search.py"))
    out = str(tmp_path / "rows.json")
    assert script["main"](["--sizes", "2000", "--dims", "32", "--kinds", "flat", "ivf", "--queries", "50",
                           "--workdir", str(tmp_path), "--json", out]) == 0
    assert "recall@10" in capsys.readouterr().out
    rows = json.load(open(out))
    assert [(r["N"], r["index"], r["kind"]) for r in rows] == [(2000, "flat", "flat"), (2000, "ivf", "ivf")]
    assert rows[0]["recall"] >= 0.99 and rows[1]["build_recall"] >= 0.95
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["batch_qps"] > 0 and r["index_mb"] > 0 and r["add_s"] > 0


def test_readme_gallery_command_lines_parse():
    """The README's hhcl-gallery lines are valid command lines of the tool."""
    import shlex

    from hhcl_plugin.tools.gallery import parse

    text = open(os.path.join(REPO, "README.md")).read().replace("\\\n", " ")
    lines = [line.split("#")[0] for line in text.splitlines() if line.startswith("hhcl-gallery ")]
    assert [shlex.split(line)[1] for line in lines] == ["build", "search"]
    for line in lines:
        args = parse(shlex.split(line)[1:])
        assert args.gallery == "G"
    assert parse(shlex.split(lines[0])[1:]).opts == ["MODEL.WEIGHTS", "output/hhcl_synth/best.pth"]
